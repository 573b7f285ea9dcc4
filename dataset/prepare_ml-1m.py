"""Prepare ml-1m in the data root (default ./dataset; --data_path to change it).

    python dataset/prepare_ml-1m.py [--data_path DIR] [--force]

The same happens automatically the first time a run names --dataset=ml-1m.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("ml-1m")
