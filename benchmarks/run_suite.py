"""Run a benchmark suite (resumable) and write its Markdown report.

    python benchmarks/run_suite.py benchmarks/suites/multi_interest_ml-100k.yaml
    python benchmarks/run_suite.py SUITE --only REMI SASRec     # some rows only
    python benchmarks/run_suite.py SUITE --report-only          # rewrite the table

See recbole_llm/bench/__init__.py for the suite format. The same command: recbole-llm bench.
"""

from recbole_llm.bench.cli import main

if __name__ == "__main__":
    main()
