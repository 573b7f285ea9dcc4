"""Prepare amazon-beauty (Amazon Beauty 5-core, S3-Rec's preprocessing) in the data root.

    python dataset/prepare_amazon-beauty.py --source_dir DIR [--data_path DIR] [--force]

DIR holds Beauty.txt and Beauty_item2attributes.json (github.com/aHuiWang/CIKM2020-S3Rec,
data/) and datamaps.json (github.com/Wenyueh/LLM-RecSys-ID, data/beauty/); a relative DIR is
taken from the working directory, else from the project root. Rules and columns:
recbole_llm/data/amazon.py. The same happens automatically the first time a run names
--dataset=amazon-beauty with source_dir set.
"""

from recbole_llm.data.prepare import main

if __name__ == "__main__":
    main("amazon-beauty")
