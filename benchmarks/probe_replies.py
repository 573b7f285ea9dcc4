"""How varied an LLM's replies are: a reply cache (JSON lines) summarised, one table per file.

    python benchmarks/probe_replies.py recbole_llm/shipped/amazon-beauty.replies.jsonl
    python benchmarks/probe_replies.py A.replies.jsonl B.replies.jsonl --top 5 --output OUT.md

For each file: the replies, how many distinct texts they hold, the share of the most common
text and of the ``--top`` most common, the distinct phrases (a reply that is a JSON list counts
each element; any other reply is one phrase) and the mean new tokens. A semantic channel whose
replies collapse onto a few texts can carry little per-user or per-session signal, whatever the
model does with it. Reads the files only; runs no model.
"""

import argparse
import collections
import json
import os
import sys


def phrases(text):
    """The phrases of one reply: a JSON list's strings, else the stripped text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return [text.strip().lower()]
    if isinstance(value, list):
        return [str(v).strip().lower() for v in value]
    return [str(value).strip().lower()]


def cell(text, width=100):
    """A reply as one Markdown table cell."""
    text = " ".join(text.split())[:width]
    return text.replace("\\", "\\\\").replace("|", "\\|")


def summarise(path, top):
    texts, tokens = [], []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise SystemExit(
                    f"{path}, line {number}: not JSON; is this a reply cache?"
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise SystemExit(f"{path}, line {number}: no 'text' field; is this a reply cache?")
            texts.append(row["text"])
            tokens.append(row.get("completion_tokens") or 0)
    if not texts:
        raise SystemExit(f"{path}: no replies")
    counts = collections.Counter(texts)
    common = counts.most_common(top)
    all_phrases = collections.Counter(p for t in texts for p in phrases(t))
    return {
        "replies": len(texts),
        "distinct": len(counts),
        "top1": common[0][1] / len(texts),
        "topn": sum(n for _, n in common) / len(texts),
        "phrases": len(all_phrases),
        "tokens": sum(tokens) / len(tokens),
        "common": common,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="reply caches (JSON lines with a 'text' field)")
    parser.add_argument("--top", type=int, default=5, help="most common replies listed")
    parser.add_argument("--output", help="also write the tables to this Markdown file")
    args = parser.parse_args()
    out = []
    for path in args.files:
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: no such file")
        s = summarise(path, args.top)
        out += [
            f"### {os.path.basename(path)}",
            "",
            "| replies | distinct texts | most common | top "
            f"{args.top} | distinct phrases | new tokens per reply |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {s['replies']} | {s['distinct']} | {s['top1']:.1%} | {s['topn']:.1%} "
            f"| {s['phrases']} | {s['tokens']:.1f} |",
            "",
            "| count | reply |",
            "|---:|---|",
            *(f"| {n} | {cell(t)} |" for t, n in s["common"]),
            "",
        ]
    text = "\n".join(out)
    print(text)
    if args.output:
        from recbole_llm.utils import atomic_write

        command = f"`python benchmarks/probe_replies.py {' '.join(sys.argv[1:])}`"
        atomic_write(args.output, lambda f: f.write(f"{command}\n\n{text}"))


if __name__ == "__main__":
    main()
