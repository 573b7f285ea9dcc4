"""Train and evaluate any recbole_llm or RecBole model (RecBole's run_recbole.py, extended):
the ``recbole-llm`` command line, whose default command is ``train``.

    python run_recbole_llm.py --model=SASRec --dataset=ml-100k --epochs=2
    python run_recbole_llm.py semantics --model=EIMF --dataset=ml-100k
    python run_recbole_llm.py --help      # every command: train, semantics, sweep, bench, ...

Any other --key=value is passed to the config, as with run_recbole.py.
"""

import sys

from recbole_llm.cli import console

if __name__ == "__main__":
    sys.exit(console())
