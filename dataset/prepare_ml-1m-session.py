"""Prepare ml-1m-session (session benchmark files built from ml-1m) in the data root.

    python dataset/prepare_ml-1m-session.py [--data_path DIR] [--force]

Rule (recbole_llm/data/sessions.py): per user, 10-minute time buckets; sessions with an item
seen fewer than 5 times are dropped, then sessions shorter than 2; one sample per session (the
last item is the target); samples in time order split 80/10/10 into train, valid, test.
The same happens automatically the first time a run names --dataset=ml-1m-session.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("ml-1m-session")
