"""How much does an LLM4SBR intent say about the next item, by text alone, before any training?

    python benchmarks/probe_intent_text.py --dataset ml-100k-session \
        --config_files benchmarks/configs/session.yaml --data_path DIR [--split test] \
        [--last_item_dir control-last-item] [--output results/intent-text-ml-100k-session.md]

Builds the dataset as LLM4SBR sees it (its intents and the ``.itemtext`` item vectors, made by
the semantic step when missing) and ranks every item for each sample of ``--split`` by the
cosine of its text vector to a query, the items of the sample's session left out (MovieLens
sessions do not repeat items). Queries: each intent view, and LLM-free ones: the last item's
text, the mean of the session's item texts, and a random vector; and the last item's text with
the intents (standardised cosines summed, as the score fusion combines terms). An intent that
ranks the next item no better than the last item's own text cannot make LLM4SBR beat its
last-item control through the text; one that ranks it at chance carries nothing; one that
lifts the last item's text when added to it says something the last item does not. No model
is trained; the test split is read only with ``--split test``.
"""

import argparse
import sys

import torch
import torch.nn.functional as F

RANDOM_SEED = 2020


def queries(interaction, dataset, text, generator):
    """``{name: [B, D]}`` query vectors of one batch."""
    item_seq, lengths = interaction["item_id_list"], interaction["item_length"]
    found = {v: interaction[f"{v}_intent"] for v in dataset.intent_views}
    found["last item"] = text[item_seq.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)]
    found["session mean"] = text[item_seq].sum(dim=1) / lengths.unsqueeze(1)  # padding row 0
    found["random"] = torch.randn(len(item_seq), text.size(1), generator=generator)
    return found


def standardised(cosine):
    """Each row's cosines standardised over the items (padding left out), as LLM4SBR's score
    fusion standardises its text term."""
    items = cosine[:, 1:]
    return (cosine - items.mean(1, keepdim=True)) / (items.std(1, keepdim=True) + 1e-6)


def combined(cosines, views):
    """The last item's text with the intents, standardised and summed with equal weights:
    what an intent adds to the last item's own text (a query that does not beat "last item"
    adds nothing a model could not get from the last item)."""
    last = standardised(cosines["last item"])
    parts = {v: standardised(cosines[v]) for v in views}
    found = {f"last item + {v}": last + parts[v] for v in views}
    if len(views) > 1:
        found["last item + " + " + ".join(views)] = last + sum(parts.values())
    return found


def measure(eval_data, dataset, ks=(10, 50)):
    """``{query: {metric@k: value}}`` of text-cosine ranking over ``eval_data``'s samples."""
    text = F.normalize(dataset.item_text_matrix().float(), dim=1)
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    totals, count = {}, 0
    discount = 1.0 / torch.log2(torch.arange(2, max(ks) + 2).float())
    for batch in eval_data:
        interaction = batch[0]
        target = interaction["item_id"]
        seen = torch.zeros(len(target), text.size(0), dtype=torch.bool)
        seen.scatter_(1, interaction["item_id_list"], True)
        seen[:, 0] = True  # padding
        cosines = {
            name: F.normalize(query.float(), dim=1) @ text.T
            for name, query in queries(interaction, dataset, text, generator).items()
        }
        cosines.update(combined(cosines, dataset.intent_views))
        for name, scores in cosines.items():
            scores[seen] = float("-inf")
            top = scores.topk(min(max(ks), text.size(0)), dim=1).indices  # a tiny catalogue
            hit = top == target.unsqueeze(1)
            row = totals.setdefault(name, {})
            for k in ks:
                row[f"recall@{k}"] = row.get(f"recall@{k}", 0.0) + hit[:, :k].sum().item()
                gain = (hit[:, :k].float() * discount[: hit[:, :k].size(1)]).sum().item()
                row[f"ndcg@{k}"] = row.get(f"ndcg@{k}", 0.0) + gain
        count += len(target)
    return {name: {m: v / count for m, v in row.items()} for name, row in totals.items()}, count


def table(results, count, title):
    metrics = list(next(iter(results.values())))
    lines = [
        f"{title}: {count} samples, every item ranked by its text cosine to the query, the "
        "session's own items left out.",
        "",
        "| query | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _measure_source(args, extra):
    """``(results, count, title)`` for the intents the settings plus ``extra`` give."""
    from recbole_llm.config import Config
    from recbole_llm.data.utils import data_preparation
    from recbole_llm.quick_start import create_dataset

    settings = dict(pair.split("=", 1) for pair in args.set)
    if args.data_path:
        settings["data_path"] = args.data_path
    config = Config(
        model="LLM4SBR",
        dataset=args.dataset,
        config_file_list=args.config_files,
        config_dict={"state": "WARNING", "show_progress": False, **settings, **extra},
    )
    train, valid, test = data_preparation(config, create_dataset(config))
    results, count = measure(valid if args.split == "valid" else test, train._dataset)
    source = config["intent_source"]
    llm = (train._dataset.semantics_manifest.get("llm") or {}).get("model", "?")
    made = f"intents from {llm}" if source == "llm" else "intents from the last item's text"
    return results, count, f"{made} (top-{config['intent_topr']} localisation)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k-session")
    parser.add_argument("--config_files", nargs="*", default=None)
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--set", nargs="*", default=[], help="key=value config settings")
    parser.add_argument(
        "--last_item_dir",
        help="also measure the last-item control's intents (intent_source last_item), made "
        "in this semantics_dir",
    )
    parser.add_argument("--output", help="also write the tables to this Markdown file")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]

    from recbole_llm.utils import atomic_write

    sources = [{}]
    if args.last_item_dir:
        sources.append({"intent_source": "last_item", "semantics_dir": args.last_item_dir})
    tables = []
    for extra in sources:
        results, count, made = _measure_source(args, extra)
        tables.append(table(results, count, f"`{args.dataset}`, {args.split} split, {made}"))
    text = "\n".join(tables)
    print(text)
    if args.output:
        command = " ".join(
            ["python benchmarks/probe_intent_text.py", f"--dataset {args.dataset}"]
            + [f"--config_files {' '.join(args.config_files)}"] * bool(args.config_files)
            + [f"--split {args.split}"]
            + [f"--set {' '.join(args.set)}"] * bool(args.set)
            + [f"--last_item_dir {args.last_item_dir}"] * bool(args.last_item_dir)
            + [f"--output {args.output}"]
        )
        body = f"# Intents by text alone\n\nWritten by `{command}`.\n\n{text}"
        atomic_write(args.output, lambda f: f.write(body))


if __name__ == "__main__":
    main()
