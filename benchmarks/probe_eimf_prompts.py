"""Does EIMF's interest prompt get interests that point at a user's next item? Prompt variants
compared on a sample of typical users, on validation, before any training.

    python benchmarks/probe_eimf_prompts.py --dataset amazon-beauty --data_path /work/data \\
        --config_files benchmarks/configs/amazon-beauty-seq.yaml benchmarks/configs/signal.yaml \\
        --users 60 --output results/eimf-prompts-amazon-beauty.md

The semantic step's files must exist (any EIMF run, or ``recbole-llm semantics``, makes them).
``--users`` typical users are drawn at random; each is asked for its interests under every
variant of the one-shot prompt (the same system line and task, over the same last items):

- ``own example``: the worked example of the dataset's ``item_noun`` (the default prompt; its
  replies are the cached ones);
- ``other example``: the other noun's worked example (movies for products and back), so an
  LLM that copies the example gives words from the wrong domain;
- ``no example``: the system line and the task alone.

For each variant: replies parsed to interests, the share that only repeat the worked example,
distinct phrases, and how well the interests rank the validation item of every user the
sampled typical users stand for (their cluster): items scored by their text's best cosine to
any of the interests, the user's training items masked, NDCG@10 and Recall@50. Two LLM-free
rows under the same scoring: the cluster's top category words as interests, and each user's
own last training item's text. Generation runs through the configured LLM (replies cached).
"""

import argparse
import collections
import json
import sys

import numpy as np

VARIANTS = ["own example", "other example", "no example"]


def variant_messages(variant, item_texts, max_interests, noun, verb):
    """One EIMF prompt in a variant, built by the semantic step's own
    :func:`~recbole_llm.semantics.prompts.eimf_messages`."""
    from recbole_llm.semantics import prompts

    own = prompts.example_noun(noun)
    example = {
        "own example": True,
        "other example": next(n for n in prompts.EIMF_EXAMPLES if n != own),
        "no example": False,
    }[variant]
    return prompts.eimf_messages(item_texts, max_interests, noun, verb, example=example)


def validation_targets(dataset, histories):
    """user -> the item after its training history in its time-ordered sequence."""
    from recbole_llm.semantics.history import time_ordered_sequences

    sequences = time_ordered_sequences(dataset)
    targets = {}
    for user, history in histories.items():
        sequence = sequences.get(user, [])
        if len(sequence) > len(history):
            targets[user] = sequence[len(history)]
    return targets


def rank_metrics(scores, target_row, masked_rows):
    """NDCG@10 and Recall@50 of one target in one score vector (masked rows excluded)."""
    scores = scores.copy()
    scores[list(masked_rows - {target_row})] = -np.inf
    rank = int(np.count_nonzero(scores > scores[target_row]))
    return (1.0 / np.log2(rank + 2) if rank < 10 else 0.0), float(rank < 50)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--config_files", nargs="*", default=[])
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--users", type=int, default=60, help="typical users sampled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the table to this Markdown file")
    args = parser.parse_args()
    command = " ".join(sys.argv[1:])
    sys.argv = sys.argv[:1]

    from recbole_llm.config import Config
    from recbole_llm.quick_start import create_dataset
    from recbole_llm.semantics import files, prompts, shared
    from recbole_llm.semantics.history import split_training_histories
    from recbole_llm.semantics.interests import listed_echoes
    from recbole_llm.semantics.parsing import parse_interests
    from recbole_llm.semantics.text import category_words

    config = Config(
        model="EIMF",
        dataset=args.dataset,
        config_file_list=args.config_files,
        config_dict={"data_path": args.data_path, "show_progress": False},
    )
    dataset = create_dataset(config)
    manifest_file = files.manifest_path(config, "eimf")
    with open(manifest_file, encoding="utf-8") as f:
        manifest = json.load(f)
    histories = split_training_histories(dataset)
    targets = validation_targets(dataset, histories)
    typical_of = {}
    with open(files.file_path(config, "usertypical"), encoding="utf-8") as f:
        next(f)
        for line in f:
            user, typical = line.rstrip("\n").split("\t")
            typical_of[user] = typical
    typical = sorted(manifest["interests"], key=str)
    rng = np.random.default_rng(args.seed)
    sample = [typical[i] for i in rng.choice(len(typical), size=args.users, replace=False)]
    members = {t: [] for t in sample}
    for user, t in typical_of.items():
        if t in members and user in targets:
            members[t].append(user)

    encoder = shared.make_encoder(config)
    tokens, texts, item_vectors = shared.encode_items(config, dataset, encoder)
    row_of = {t: i for i, t in enumerate(tokens)}
    quoted = texts.prompt_texts()
    noun, verb, max_interests = config["item_noun"], config["item_verb"], config["max_interests"]
    recent = {t: histories[t][-config["prompt_max_items"] :] for t in sample}
    generator = shared.make_generator(config, "eimf", refresh=False)

    interests, backends = {}, {}
    for variant in VARIANTS:
        requests = [
            variant_messages(variant, [quoted[i] for i in recent[t]], max_interests, noun, verb)
            for t in sample
        ]
        replies, _ = generator.run(requests, config["llm_batch_size"], variant)
        made_by = collections.Counter(r.backend for r in replies if not r.error)
        backends[variant] = ", ".join(f"{n} {b}" for b, n in sorted(made_by.items()))
        parsed = {}
        for t, reply in zip(sample, replies):
            echoes = listed_echoes(quoted, recent[t])
            parsed[t] = [] if reply.error else parse_interests(reply.text, max_interests, echoes)
        interests[variant] = parsed
    words = category_words(
        config, sorted({i for t in sample for u in members[t] for i in histories[u]})
    )
    interests["category words (no LLM)"] = {
        t: [
            w
            for w, _ in collections.Counter(
                w for u in members[t] for i in histories[u] for w in words.get(i, [])
            ).most_common(max_interests)
        ]
        for t in sample
    }

    def evaluate(vectors_of_user):
        ndcg, recall = [], []
        for t in sample:
            for user in members[t]:
                vectors = vectors_of_user(t, user)
                n, r = 0.0, 0.0  # no interests, or a target without text: a miss
                if vectors is not None and targets[user] in row_of:
                    scores = (vectors @ item_vectors.T).max(axis=0)
                    seen = {row_of[i] for i in histories[user] if i in row_of}
                    n, r = rank_metrics(scores, row_of[targets[user]], seen)
                ndcg.append(n)
                recall.append(r)
        return float(np.mean(ndcg)), float(np.mean(recall)), len(ndcg)

    rows = []
    for name, parsed in interests.items():
        phrase_vectors = {t: (encoder.encode(parsed[t]) if parsed[t] else None) for t in sample}
        ndcg, recall, n = evaluate(lambda t, u, pv=phrase_vectors: pv[t])
        echo = [t for t in sample if prompts.echoes_example(parsed[t], noun)]
        distinct = len({p.lower() for t in sample for p in parsed[t]})
        usable = sum(1 for t in sample if parsed[t])
        made = backends.get(name, "")
        rows.append((name, made, usable, len(echo), distinct, ndcg, recall, n))
    last = evaluate(lambda t, u: item_vectors[[row_of[histories[u][-1]]]])
    rows.append(("last training item's text (no LLM)", "", None, None, None, *last))

    lines = [
        f"`python benchmarks/probe_eimf_prompts.py {command}`",
        "",
        f"{args.users} typical users of {args.dataset} (seed {args.seed}), LLM "
        f"{config['llm_model']}, repetition penalty {config['llm_repetition_penalty']}; replies "
        f"made now by {config['llm_backend']} or found in the reply cache (the backend that made "
        f"each is counted); validation items of the {rows[0][7]} users they stand for, training "
        "items masked.",
        "",
        "| interests from | replies made by | typical users with interests "
        "| only the example's answer | distinct phrases | NDCG@10 | Recall@50 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, made, usable, echo, distinct, ndcg, recall, _ in rows:
        cells = ["", "", ""] if usable is None else [f"{usable}", f"{echo}", f"{distinct}"]
        lines.append(f"| {name} | {made} | {' | '.join(cells)} | {ndcg:.4f} | {recall:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        from recbole_llm.utils import atomic_write

        title = f"# EIMF's interest prompt, variants compared ({args.dataset})"
        atomic_write(args.output, lambda f: f.write(f"{title}\n\n{text}"))


if __name__ == "__main__":
    main()
