"""Prepare amazon-beauty-session (LLM4SBR's Beauty sessions) in the data root.

    python dataset/prepare_amazon-beauty-session.py --source_dir DIR [--data_path DIR] [--force]

Rule (recbole_llm/data/sessions.py, write_sequence_session_dataset): each user's sequence is
one session and every prefix of it a sample (the next item is the target); a fixed random
10,000 of the 176,139 samples are kept (seed 0, drawn before the split); users shuffled
(seed 0) are cut 80/10/10 into train, valid and test. amazon-beauty is prepared first from
DIR (see dataset/prepare_amazon-beauty.py) unless it already is. The same happens
automatically the first time a run names --dataset=amazon-beauty-session with source_dir set.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("amazon-beauty-session")
