"""Prepare ml-100k in the data root (default ./dataset; --data_path to change it).

    python dataset/prepare_ml-100k.py [--data_path DIR] [--force]

The same happens automatically the first time a run names --dataset=ml-100k.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("ml-100k")
