"""The LLM-size study's report: EIMF's gain over its backbone against what each LLM cost.

    python benchmarks/run_suite.py benchmarks/suites/llm_size_ml-100k.yaml   # the runs
    python benchmarks/report_llm_size.py                                      # results/llm-size.md

For every row of the suite: test NDCG@10 (mean ± std over the seeds run), the paired per-user
bootstrap 95 % interval of its difference to the backbone, and, from the semantic step's
manifest, the LLM calls, prompt and new tokens and generation seconds that made its semantics
(cached replies count at the cost recorded when they were made), and how many typical users got
interests from the LLM.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def manifest_for(suite, entry, data_path):
    from recbole_llm.semantics.files import manifest_path

    if entry["model"] != "EIMF":
        return None
    folder = {
        "semantics_dir": entry["config"].get("semantics_dir"),
        "data_path": os.path.join(data_path, suite["dataset"]),
        "dataset": suite["dataset"],
    }
    path = manifest_path(folder, "eimf")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def render(suite, rows, data_path, baseline):
    from recbole_llm.benchmark import _mean_std, compare, entry_rows

    metric = suite["report"]["compare_metric"]
    lines = [
        f"# {suite['title']}",
        "",
        suite["description"].strip(),
        "",
        f"Test {metric}, mean ± std over the seeds run; vs backbone: the difference to "
        f"`{baseline}` on the seeds both ran, with its paired per-user bootstrap 95 % interval. "
        "LLM cost from each row's semantic manifest (replies served from the cache are counted "
        "at what they cost when made).",
        "",
        f"| row | {metric} | seeds | vs backbone | 95 % interval | LLM calls | prompt tokens "
        "| new tokens | LLM seconds | typical users with LLM interests |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for entry in suite["runs"]:
        values = [r["test"][metric] for r in entry_rows(rows, entry)]
        score = _mean_std(values)
        delta, interval = "-", "-"
        if entry["label"] != baseline:
            result = compare(rows, entry["label"], baseline, suite["seeds"], metric)
            if result is not None:
                delta = f"{result['mean']:+.4f} ({100 * (result['relative'] or 0):+.1f} %)"
                interval = f"[{result['low']:+.4f}, {result['high']:+.4f}]"
        manifest = manifest_for(suite, entry, data_path)
        if manifest is None:
            cost = ["-"] * 5 if entry["model"] == "EIMF" else ["0"] * 4 + ["-"]
        else:
            counts = manifest["counts"]
            gen = manifest["generation"] or {  # no LLM in this row's semantics
                "requests": 0,
                "total_prompt_tokens": 0,
                "total_completion_tokens": 0,
                "total_seconds": 0.0,
            }
            cost = [
                str(gen["requests"]),
                str(gen["total_prompt_tokens"]),
                str(gen["total_completion_tokens"]),
                f"{gen['total_seconds']:.0f}",
                f"{counts['typical_users_from_llm']} / {counts['typical_users']}",
            ]
        lines.append(
            f"| {entry['label']} | {score} | {len(values)}/{len(entry['seeds'])} | {delta} "
            f"| {interval} | " + " | ".join(cost) + " |"
        )
    lines += [
        "",
        f"Runs and their configuration: `{os.path.basename(suite['report']['output'])}`. "
        "Reproduce: `python benchmarks/run_suite.py "
        f"{os.path.relpath(suite['path'], os.getcwd())}` then "
        "`python benchmarks/report_llm_size.py`.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=os.path.join(HERE, "suites", "llm_size_ml-100k.yaml"))
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--baseline", default="REMI, no semantic losses (d)")
    parser.add_argument("--output", default=os.path.join(HERE, "..", "results", "llm-size.md"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from recbole_llm.benchmark import load_rows, load_suite, write_report
    from recbole_llm.data.prepare import atomic_write

    suite = load_suite(args.suite)
    rows = load_rows(suite)
    write_report(suite, rows)
    text = render(suite, rows, os.path.abspath(args.data_path), args.baseline)
    output = os.path.normpath(args.output)
    atomic_write(output, lambda f: f.write(text))
    print(text)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
