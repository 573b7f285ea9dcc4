"""Prepare ml-100k-session-1k (session benchmark files built from ml-100k) in the data root.

    python dataset/prepare_ml-100k-session-1k.py [--data_path DIR] [--force]

Rule (recbole_llm/data/sessions.py): per user, 10-minute time buckets; sessions with an item
seen fewer than 5 times are dropped, then sessions shorter than 2; one sample per session (the
last item is the target); a fixed random 1,000 of them (seed 0) are kept, in time order, and
split 80/10/10 into train, valid, test. The LLM-size study's session subset.
The same happens automatically the first time a run names --dataset=ml-100k-session-1k.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("ml-100k-session-1k")
