"""``python -m recbole_llm.bench SUITE``: the same as ``python benchmarks/run_suite.py SUITE``."""

from recbole_llm.bench.cli import main

if __name__ == "__main__":
    main()
