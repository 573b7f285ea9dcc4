"""Sweep hyper-parameters from a YAML file (or RecBole's line format), as RecBole's run_hyper.py.

    python run_hyper.py --model=EIMF --dataset=ml-100k --params_file=sweeps/eimf.yaml --algo=grid

See recbole_llm/hyper.py for the file format; --output_file gets a Markdown table of the
trials and <output stem>.best.yaml the best configuration. Any other --key=value (e.g.
--epochs=20) is a config value of every trial. The same command: recbole-llm sweep.
"""

from recbole_llm.hyper import main

if __name__ == "__main__":
    main()
