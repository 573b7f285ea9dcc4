"""Suite reports: paired per-user bootstrap comparisons, the Markdown report and its chart.

The report gives mean +- std over seeds and, for each comparison, the paired per-user
bootstrap 95 % interval of the difference; it is rebuilt from the committed rows alone
(``--report-only``), byte for byte.
"""

import json
import os

import numpy as np
import yaml

from recbole_llm.bench.suite import entry_rows, shared_config
from recbole_llm.utils import atomic_write


def paired_bootstrap(deltas, n_resamples=2000, seed=0):
    """Mean and 95 % percentile interval of the mean of per-user differences."""
    deltas = np.asarray(deltas, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(deltas), size=(n_resamples, len(deltas)))
    means = deltas[index].mean(axis=1)
    return float(deltas.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(rows, label_a, label_b, seeds, metric):
    """Paired per-user comparison of two labels on one metric, pooled over common seeds.

    Users are paired by id within a seed; each user's difference is averaged over seeds, then
    users are resampled. Returns None when no seed has both runs.
    """
    per_user, common = {}, []
    for seed in seeds:
        a, b = rows.get((label_a, seed)), rows.get((label_b, seed))
        if not a or not b:
            continue
        common.append(seed)
        users_a = a.get("users") or list(range(len(a["per_user_test"][metric])))
        users_b = b.get("users") or list(range(len(b["per_user_test"][metric])))
        values_b = dict(zip(users_b, b["per_user_test"][metric]))
        for user, value in zip(users_a, a["per_user_test"][metric]):
            if user in values_b:
                per_user.setdefault(user, []).append(value - values_b[user])
    if not per_user:
        return None
    deltas = [np.mean(v) for v in per_user.values()]
    mean, low, high = paired_bootstrap(deltas)
    # relative to B on the same seeds as the differences (B may have run on more)
    base = np.mean([rows[(label_b, s)]["test"][metric] for s in common])
    return {
        "mean": mean,
        "low": low,
        "high": high,
        "relative": mean / base if base else None,
        "users": len(deltas),
        "seeds": common,
        "epoch_ratio": _time_ratio(rows, label_a, label_b, common, "seconds_per_epoch"),
        "test_time_ratio": _time_ratio(rows, label_a, label_b, common, "test_eval_seconds"),
    }


def _time_ratio(rows, label_a, label_b, seeds, key):
    """A's mean ``key`` (seconds) over B's on the same seeds; None if a row lacks it."""
    times = [[rows[(label, s)].get(key) for s in seeds] for label in (label_a, label_b)]
    if any(t is None for side in times for t in side) or not np.mean(times[1]):
        return None
    return float(np.mean(times[0]) / np.mean(times[1]))


def _metric_cells(rows, split, keys):
    """Each metric's mean ± std over the rows that have it."""
    return [mean_std([r[split][k] for r in rows if k in r[split]]) for k in keys]


def mean_std(values, digits=4):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _comparison_lines(suite, rows, seeds, metric):
    """The paired-comparison table of a report for one metric."""
    lines = [
        "",
        f"Paired per-user bootstrap (2,000 resamples) of the test {metric} difference A − B, "
        "each user's difference averaged over seeds. Time A / B: A's seconds per training "
        "epoch and for the test evaluation over B's, on the same seeds (runs may have shared "
        "the CPU; `benchmarks/bench_model_speed.py` measures the ratios on an idle one):",
        "",
        "| A | B | A − B | relative | 95 % interval | users | seeds | epoch time A / B "
        "| test time A / B |",
        "|---|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for label_a, label_b in suite["comparisons"]:
        result = compare(rows, label_a, label_b, seeds, metric)
        if result is None:
            lines.append(f"| {label_a} | {label_b} | - | - | - | - | - | - | - |")
            continue
        relative = f"{100 * result['relative']:+.1f} %" if result["relative"] is not None else "-"
        ratios = [
            f"{ratio:.2f}x" if ratio is not None else "-"
            for ratio in (result["epoch_ratio"], result["test_time_ratio"])
        ]
        lines.append(
            f"| {label_a} | {label_b} | {result['mean']:+.4f} | {relative} | "
            f"[{result['low']:+.4f}, {result['high']:+.4f}] | {result['users']} | "
            + ", ".join(str(seed) for seed in result["seeds"])
            + f" | {ratios[0]} | {ratios[1]} |"
        )
    return lines


def _masked_lines(suite, rows, metric_keys):
    """The masked metrics of the rows that have them, where the report's own metrics are not
    masked (a suite whose rows mostly ran without ``mask_history``, e.g. general models run
    under a leaderboard's sequential protocol with their history masked as well)."""
    if any(key.startswith("masked_") for key in metric_keys):
        return []
    split = suite["report"]["split"]
    masked = [f"masked_{key}" for key in metric_keys]
    table = []
    for entry in suite["runs"]:
        found = [r for r in entry_rows(rows, entry) if masked[0] in r[split]]
        if found:
            cells = _metric_cells(found, split, masked)
            table.append(f"| {entry['label']} | " + " | ".join(cells) + f" | {len(found)} |")
    if not table:
        return []
    return [
        "",
        "## With each user's history masked",
        "",
        "The rows run with `mask_history: True` also rank without the items each user had "
        "before the target (for a general model, RecBole's general protocol: the training "
        "items at validation, training and validation items at test), in the same "
        "evaluation pass as the table above; the other rows were not evaluated this way. "
        "Mean ± std over seeds.",
        "",
        "| model | " + " | ".join(masked) + " | runs |",
        "|---|" + "---:|" * (len(masked) + 1),
        *table,
    ]


#: LLM4SBR's metrics (its P@K, with one target per session, is RecBole's hit@K) and names
PAPER_METRICS = (("hit", "P"), ("mrr", "MRR"))


def best_over_epochs(row, metric):
    """The best test value of ``metric`` over a row's epochs (``epoch_test``), or None."""
    values = [epoch[metric] for epoch in row.get("epoch_test") or [] if metric in epoch]
    return max(values) if values else None


def _paper_mode_lines(suite, rows):
    """LLM4SBR's paper mode beside our protocol: each metric's best test value over epochs."""
    topk = suite["report"]["topk"]
    head = [f"{name}@{k} {side}" for k in topk for _, name in PAPER_METRICS for side in "PO"]
    lines = [
        "",
        "## Paper mode (LLM4SBR's protocol; it selects on the test set)",
        "",
        "**This table selects on the test set.** LLM4SBR's official code evaluates the test set "
        "after every epoch and reports, for each metric separately, its best value over epochs "
        "(each metric may come from another epoch): optimistic by construction, shown only to "
        "compare with the paper's numbers. P: that best test value over the epochs our runs "
        "trained (`test_every_epoch`; early stopping still on validation); O: ours, the test "
        "value of the checkpoint chosen on validation (the table above). P@K is the paper's "
        "precision, which with one target per session is hit@K (RecBole's Precision@K would "
        "be hit@K / K); values are fractions (the paper prints them x100). Mean ± std over "
        "seeds.",
        "",
        "| model | " + " | ".join(head) + " | runs with every epoch's test |",
        "|---|" + "---:|" * (len(head) + 1),
    ]
    for entry in suite["runs"]:
        found = entry_rows(rows, entry)
        cells = []
        for k in topk:
            for metric, _ in PAPER_METRICS:
                key = f"{metric}@{k}"
                best = [best_over_epochs(r, key) for r in found]
                cells.append(mean_std([b for b in best if b is not None]))
                cells.append(mean_std([r["test"][key] for r in found if key in r["test"]]))
        tested = sum(1 for r in found if r.get("epoch_test"))
        lines.append(f"| {entry['label']} | " + " | ".join(cells) + f" | {tested}/{len(found)} |")
    return lines


def render_report(suite, rows, chart=None):
    """The suite's Markdown report (``chart``: a PNG file name to show, beside the report)."""
    report = suite["report"]
    metric_keys = [f"{m}@{k}" for k in report["topk"] for m in report["metrics"]]
    lines = [f"# {suite.get('title', suite['name'])}", ""]
    if suite.get("description"):
        lines += [suite["description"].strip(), ""]
    seeds = suite["seeds"]
    split = report["split"]
    what = (
        "test metrics (full ranking)"
        if split == "test"
        else "validation metrics only (full ranking; this report is for choosing settings, so "
        "it shows no test result)"
    )
    lines += [
        f"Dataset `{suite['dataset']}`, seeds {seeds}; {what}, mean ± std "
        "over seeds; the checkpoint is the epoch with the best validation "
        f"`{shared_config(suite).get('valid_metric', 'MRR@10')}`. Epochs: trained, including "
        "the early-stopping patience. s/epoch: the median epoch of each run, averaged; runs "
        "may share the CPU with others, so compare speed with the benchmark scripts instead.",
        "",
        "| model | " + " | ".join(metric_keys) + " | epochs | s/epoch | runs |",
        "|---|" + "---:|" * (len(metric_keys) + 3),
    ]
    for entry in suite["runs"]:
        found = entry_rows(rows, entry)
        cells = _metric_cells(found, split, metric_keys)
        epochs = mean_std([r["epochs"] for r in found], digits=1)
        seconds = f"{np.mean([r['seconds_per_epoch'] for r in found]):.1f}" if found else "-"
        lines.append(
            f"| {entry['label']} | "
            + " | ".join(cells)
            + f" | {epochs} | {seconds} | {len(found)}/{len(entry['seeds'])} |"
        )
    if chart:
        lines += ["", f"![{split} {report['compare_metric']} by model]({chart})"]
    if suite.get("comparisons"):
        for metric in [report["compare_metric"], *report["also_compare"]]:
            lines += _comparison_lines(suite, rows, seeds, metric)
    if report.get("paper_mode"):
        lines += _paper_mode_lines(suite, rows)
    lines += _masked_lines(suite, rows, metric_keys)
    if suite.get("findings"):
        # hand-written: what the tables mean, where a goal falls short and why
        lines += ["", "## Findings", "", suite["findings"].strip()]
    lines += [
        "",
        "## Configuration",
        "",
        "Shared by every row:",
        "",
        "```yaml",
        yaml.safe_dump(shared_config(suite), sort_keys=True).strip(),
        "```",
        "",
    ]
    own = [
        (e["label"], e["model"], e["config"])
        for e in suite["runs"]
        if e["config"] or e["label"] != e["model"]
    ]
    if own:
        lines += ["Rows with their own keys:", ""]
        for label, model, config in own:
            lines.append(f"- {label}: model `{model}`, `{json.dumps(config, sort_keys=True)}`")
        lines.append("")
    relative_suite = os.path.relpath(suite["path"], os.getcwd())
    lines += [
        f"Reproduce: `python benchmarks/run_suite.py {relative_suite}` (finished runs are reused; "
        f"rows are in `{os.path.relpath(suite['results_dir'], os.path.dirname(report['output'] or suite['path']))}/`).",
        "",
    ]
    return "\n".join(lines)


def write_chart(suite, rows, path, log=print):
    """A bar chart of ``compare_metric`` on the report's split (mean ± std over seeds) per
    row, as PNG.

    Needs matplotlib (the ``bench`` extra); without it, says so and returns None.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no chart: matplotlib is missing (pip install 'recbole-llm[bench]')")
        return None
    metric, split = suite["report"]["compare_metric"], suite["report"]["split"]
    labels, means, stds = [], [], []
    for entry in suite["runs"]:
        values = [r[split][metric] for r in entry_rows(rows, entry) if metric in r[split]]
        if values:
            labels.append(f"{entry['label']} ({len(values)}/{len(entry['seeds'])})")
            means.append(float(np.mean(values)))
            stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    positions = np.arange(len(labels))[::-1]  # suite order, top to bottom
    axes.barh(positions, means, xerr=stds, color="#4c72b0", ecolor="#333333", capsize=3)
    axes.set_yticks(positions, labels)
    axes.set_xlabel(f"{split} {metric} (mean ± std over seeds; runs done / planned)")
    axes.set_title(suite.get("title", suite["name"]), fontsize=10)
    figure.tight_layout()
    tmp = f"{path}.{os.getpid()}.tmp"
    figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def write_report(suite, rows):
    """Write the suite's report to ``report.output`` and its chart beside it (``.png``),
    atomically; returns the report's path and text."""
    path = suite["report"]["output"]
    chart = None
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        chart = write_chart(suite, rows, os.path.splitext(path)[0] + ".png")
    text = render_report(suite, rows, chart=chart and os.path.basename(chart))
    if path:
        atomic_write(path, lambda f: f.write(text))
    return path, text
