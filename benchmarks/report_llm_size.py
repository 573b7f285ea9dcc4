"""The LLM-size study's report: each LLM-enhanced model's gain over its backbone against what
each LLM cost, for EIMF (ml-100k) and LLM4SBR (ml-100k-session-1k).

    python benchmarks/run_suite.py benchmarks/suites/llm_size_ml-100k.yaml             # EIMF
    python benchmarks/run_suite.py benchmarks/suites/llm_size_ml-100k-session-1k.yaml  # LLM4SBR
    python benchmarks/report_llm_size.py                                  # results/llm-size.md

For every row of each suite: test NDCG@10 (mean ± std over the seeds run), the paired
bootstrap 95 % interval of its difference to the suite's first row (the backbone), and, from
the semantic step's manifest, the LLM calls, prompt and new tokens and generation seconds that
made its semantics (cached replies count at the cost recorded when they were made), and how
much of the semantics came from the LLM: EIMF's typical users with parsed interests, LLM4SBR's
intents taken from a reply rather than the last-item fallback. Where the data root has no
manifest (a fresh clone that reuses the committed rows), the cost comes from
``results/llm-size-costs.json``, which every run of this script updates from the manifests it
reads. A suite with no rows yet gets a line saying so.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


MANIFEST_KINDS = {"EIMF": "eimf", "LLM4SBR": "llm4sbr"}


def manifest_for(suite, entry, data_path):
    from recbole_llm.semantics.files import manifest_path

    if entry["model"] not in MANIFEST_KINDS:
        return None
    folder = {
        "semantics_dir": entry["config"].get("semantics_dir"),
        "data_path": os.path.join(data_path, suite["dataset"]),
        "dataset": suite["dataset"],
    }
    path = manifest_path(folder, MANIFEST_KINDS[entry["model"]])
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def llm_share(entry, counts):
    """How much of a row's semantics came from the LLM, from its manifest's counts."""
    if entry["model"] == "EIMF":
        return f"{counts['typical_users_from_llm']} / {counts['typical_users']} typical users"
    from_llm = sum(counts["intents_from_llm"].values())
    return f"{from_llm} / {from_llm + sum(counts['intents_from_last_item'].values())} intents"


def row_cost(entry, manifest, ledger):
    """A row's cost cells: from its semantic manifest (recorded in ``ledger``, the suite's part
    of ``llm-size-costs.json``), else from the ledger, else dashes.

    The manifests live in the data root, which git does not keep; the ledger lets a fresh clone
    that reuses the committed rows rebuild the committed table without rerunning the LLM."""
    if entry["model"] not in MANIFEST_KINDS:
        return ["0"] * 4 + ["-"]
    if manifest is None:
        return list(ledger.get(entry["label"], ["-"] * 5))
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
        llm_share(entry, counts),
    ]
    ledger[entry["label"]] = cost
    return cost


def render(suite, rows, data_path, baseline, ledger):
    from recbole_llm.bench.report import compare
    from recbole_llm.bench.report import mean_std as _mean_std
    from recbole_llm.bench.suite import entry_rows

    metric = suite["report"]["compare_metric"]
    lines = [
        f"## {suite['title']}",
        "",
        suite["description"].strip(),
        "",
        f"Test {metric}, mean ± std over the seeds run; vs backbone: the difference to "
        f"`{baseline}` on the seeds both ran, with its paired bootstrap 95 % interval over "
        "test users (sessions, on a session dataset). "
        "LLM cost from each row's semantic manifest (replies served from the cache are counted "
        "at what they cost when made); where the data root has no manifest (a fresh clone "
        "reusing the committed rows), from `llm-size-costs.json`, which this report updates "
        "from every manifest it reads.",
        "",
        f"| row | {metric} | seeds | vs backbone | 95 % interval | LLM calls | prompt tokens "
        "| new tokens | LLM seconds | semantics from the LLM |",
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
        cost = row_cost(entry, manifest, ledger.setdefault(suite["name"], {}))
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


SUITES = ["llm_size_ml-100k.yaml", "llm_size_ml-100k-session-1k.yaml"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--suites",
        nargs="+",
        default=[os.path.join(HERE, "suites", name) for name in SUITES],
        help="suite YAMLs, one section each; the backbone is each suite's first row",
    )
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--output", default=os.path.join(HERE, "..", "results", "llm-size.md"))
    parser.add_argument(
        "--costs",
        default=os.path.join(HERE, "..", "results", "llm-size-costs.json"),
        help="each row's LLM cost, kept for data roots without the semantic manifests",
    )
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(HERE))
    from recbole_llm.bench.report import write_report
    from recbole_llm.bench.suite import load_rows, load_suite
    from recbole_llm.utils import atomic_write

    ledger = {}
    if os.path.exists(args.costs):
        with open(args.costs, encoding="utf-8") as f:
            ledger = json.load(f)
    sections = [
        "# The LLM-size study: what a bigger LLM buys",
        "",
        "One section per model. Within a section, every row has the same prompts, config and "
        "seeds; only the source of the semantics differs.",
        "",
    ]
    for path in args.suites:
        suite = load_suite(path)
        rows = load_rows(suite)
        if not rows:
            sections += [
                f"## {suite['title']}",
                "",
                "Not run yet: `python benchmarks/run_suite.py "
                f"{os.path.relpath(suite['path'], os.getcwd())}`.",
                "",
            ]
            continue
        write_report(suite, rows)
        baseline = suite["runs"][0]["label"]
        sections.append(render(suite, rows, os.path.abspath(args.data_path), baseline, ledger))
    text = "\n".join(sections)
    output = os.path.normpath(args.output)
    atomic_write(output, lambda f: f.write(text))
    atomic_write(
        os.path.normpath(args.costs),
        lambda f: f.write(json.dumps(ledger, indent=2, sort_keys=True) + "\n"),
    )
    print(text)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
