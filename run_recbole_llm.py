"""Train and evaluate any recbole_llm or RecBole model (RecBole's run_recbole.py, extended).

    python run_recbole_llm.py --model=SASRec --dataset=ml-100k --epochs=2

Any other --key=value is passed to the config, as with run_recbole.py.
"""

from recbole_llm.cli import main

if __name__ == "__main__":
    main()
