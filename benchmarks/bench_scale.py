"""How the semantic step's cost grows with the data: synthetic logs of 10k to 1M users (EIMF) and
100k to 10M sessions (LLM4SBR), each stage timed, peak memory per size, ratios between sizes.

    python benchmarks/bench_scale.py --kind eimf --sizes 10000 100000     # measure, one by one
    python benchmarks/bench_scale.py --kind llm4sbr --sizes 100000
    python benchmarks/bench_scale.py --report                             # every size measured

Each size is written as RecBole atomic files (``--items`` items with a name and categories, so
the step has item texts; EIMF: about 10 interactions per user, LLM4SBR: one sample per session
with about 4 items before its target) into ``--work`` (kept between calls, so sizes can be
measured one at a time; ``--clean`` removes it). Then, each in a process of its own (peak
memory is that process's ``ru_maxrss``):

1. ``step``: the semantic step end to end as ``--semantics`` runs it, with the LLM replaced by
   an instant in-process backend (replies derived from each prompt) behind the reply cache, so
   a reply costs what a cached one costs plus its cache write; item texts are shared by all
   sizes, so the embedding cache encodes them once (the first run gives the encoder's cost per
   text). Stages are timed by wrapping the step's own functions (the time of a stage excludes
   the stages it calls); "other" is what no wrapper covers. (``--phases prefill step load``
   runs the step once before, so that the measured one finds every reply in the cache.)
2. ``load``: the semantic dataset as an entry point builds it (manifest checked, then
   ``EIMFDataset`` / ``LLM4SBRDataset``): RecBole's loading and ours apart.

The report gives seconds per stage and size, the peak, the ratio of each to the size below,
and a projection to ten times the largest size measured from the last ratio (stated as one).
Run with ``OMP_NUM_THREADS=1`` for one-core numbers.
"""

import argparse
import collections
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

KINDS = ("eimf", "llm4sbr")
CATEGORIES = 50
PHRASES = [f"{a} {b}" for a in ("vintage", "modern", "budget", "premium", "eco") for b in (
    "skincare", "fragrance", "makeup", "haircare", "tools", "nails", "bath", "sun care",
    "men's grooming", "gift sets")]  # fmt: skip
WORDS = ("amber azure bold brisk calm coral crisp dawn dune ember fern frost gale glow "
         "haze ivory jade lark lush maple mist noble opal pearl pine plum quartz rain "
         "ridge rose sage silk slate spark stone storm tide velvet willow zest").split()  # fmt: skip


def dataset_name(kind, size):
    return f"scale-{kind}-{size}"


# --------------------------------------------------------------------------- synthetic data


def write_items(folder, name, n_items, rng):
    """``.item``: a three-word name made distinct by the id, and two categories."""
    words = np.array(WORDS)[rng.integers(0, len(WORDS), size=(n_items, 3))]
    ids = np.arange(1, n_items + 1)
    second = (ids * 7 + 3) % CATEGORIES
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tcategory:token_seq\n")
        for i, (a, b, c) in zip(ids.tolist(), words.tolist()):
            f.write(f"{i}\t{a.title()} {b} {c} {i}\tcat{i % CATEGORIES} cat{second[i - 1]}\n")


def _items_of(favourite, count, n_items, rng):
    """Items for rows whose owner likes category ``favourite``: 70 % of that category, the
    rest by popularity (a Zipf-like draw)."""
    own = favourite + CATEGORIES * rng.integers(0, n_items // CATEGORIES, size=count)
    popular = np.minimum((rng.pareto(1.2, size=count) * 50).astype(np.int64), n_items - 1)
    items = np.where(rng.random(count) < 0.7, own, popular) + 1
    return np.minimum(items, n_items)


def write_eimf(folder, name, n_users, n_items, rng):
    """``.inter`` of ``n_users`` users, 5 to 200 interactions each (about 10 on average)."""
    lengths = np.minimum(4 + rng.geometric(1 / 6, size=n_users), 200)
    users = np.repeat(np.arange(1, n_users + 1), lengths)
    favourite = rng.integers(0, CATEGORIES, size=n_users)[users - 1]
    items = _items_of(favourite, len(users), n_items, rng)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(users)) - np.repeat(starts, lengths)
    times = 1_600_000_000 + (users % 997) * 10_000 + position * 3_600
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for start in range(0, len(users), 1_000_000):
            block = slice(start, start + 1_000_000)
            rows = np.stack([users[block], items[block], times[block]], axis=1)
            np.savetxt(f, rows, fmt="%d", delimiter="\t")
    return {"users": n_users, "interactions": int(len(users))}


def write_llm4sbr(folder, name, n_sessions, n_items, rng):
    """Benchmark files of ``n_sessions`` samples (80/10/10): 1 to 20 items before the target."""
    lengths = np.minimum(rng.geometric(1 / 4, size=n_sessions), 20)
    favourite = rng.integers(0, CATEGORIES, size=n_sessions)
    items = _items_of(np.repeat(favourite, lengths + 1), int((lengths + 1).sum()), n_items, rng)
    ends = np.cumsum(lengths + 1)
    cuts = [0, int(round(n_sessions * 0.8)), int(round(n_sessions * 0.9)), n_sessions]
    header = "session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"
    for part, lo, hi in zip(("train", "valid", "test"), cuts, cuts[1:]):
        with open(os.path.join(folder, f"{name}.{part}.inter"), "w", encoding="utf-8") as f:
            f.write(header)
            for start in range(lo, hi, 500_000):
                stop = min(start + 500_000, hi)
                first = int(ends[start - 1]) if start else 0
                tokens = items[first : int(ends[stop - 1])].astype(str).tolist()
                lines, at = [], 0
                for s, n in zip(range(start + 1, stop + 1), lengths[start:stop].tolist()):
                    listing = " ".join(tokens[at : at + n])
                    lines.append(f"{s}\t{listing}\t{tokens[at + n]}\t{1_600_000_000 + s}\n")
                    at += n + 1
                f.write("".join(lines))
    return {"sessions": n_sessions, "items_before_targets": int(lengths.sum())}


def make_data(work, kind, size, n_items):
    folder = os.path.join(work, "data", dataset_name(kind, size))
    done = os.path.join(folder, "counts.json")
    if os.path.isfile(done):
        return json.load(open(done))
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(size)
    start = time.perf_counter()
    write_items(folder, dataset_name(kind, size), n_items, np.random.default_rng(0))
    writer = write_eimf if kind == "eimf" else write_llm4sbr
    counts = writer(folder, dataset_name(kind, size), size, n_items, rng)
    counts["items"], counts["seconds"] = n_items, round(time.perf_counter() - start, 1)
    json.dump(counts, open(done, "w"))
    return counts


# --------------------------------------------------------------------------- the measured runs


def bench_config(work, kind, size):
    from recbole_llm.config import Config

    cache = os.path.join(work, "cache", dataset_name(kind, size))
    os.makedirs(cache, exist_ok=True)
    shared_embeddings = os.path.join(work, "cache", "embeddings")
    os.makedirs(shared_embeddings, exist_ok=True)
    if not os.path.exists(os.path.join(cache, "embeddings")):
        os.symlink(shared_embeddings, os.path.join(cache, "embeddings"))
    keys = {
        "data_path": os.path.join(work, "data"),
        "semantics_cache_dir": cache,
        "checkpoint_dir": os.path.join(work, "saved"),
        "show_progress": False,
        "state": "WARNING",
        "text_fields": ["title", "category"],
        "category_field": "category",
        "item_noun": "product",
        "item_verb": "bought",
        "llm_backend": "openai",
        "llm_model": "scale-bench",
        "llm_base_url": "http://127.0.0.1:9/v1",  # never asked: every reply is cached
        "llm_batch_size": 512,
    }
    if kind == "eimf":
        keys["load_col"] = {"inter": ["user_id", "item_id", "timestamp"]}
        keys["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}
        model = "EIMF"
    else:
        keys["USER_ID_FIELD"] = "session_id"
        keys["load_col"] = {"inter": ["session_id", "item_id_list", "item_id"]}
        keys["alias_of_item_id"] = ["item_id_list"]
        keys["benchmark_filename"] = ["train", "valid", "test"]
        keys["MAX_ITEM_LIST_LENGTH"] = 50
        model = "LLM4SBR"
    return Config(model=model, dataset=dataset_name(kind, size), config_dict=keys)


class Stages:
    """Seconds per stage from wrapped functions; a stage's time excludes the stages it calls."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.Counter()
        self._open = []

    def wrap(self, owner, attribute, stage):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._open.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._open.pop()
                self.seconds[stage] += elapsed - inner
                self.calls[stage] += 1
                if self._open:
                    self._open[-1] += elapsed

        setattr(owner, attribute, timed)


def instant_answer(messages):
    """The instant LLM's reply: EIMF interests or an item named in the session's prompt."""
    content = messages[-1]["content"]
    pick = zlib.crc32(content.encode())
    if "guess an item" in content:
        listed = re.findall(r"^\d+\. (.*)_\d+$", content, flags=re.M)
        return listed[pick % len(listed)].split(" (")[0]
    return json.dumps([PHRASES[(pick >> (5 * k)) % len(PHRASES)] for k in range(3)])


class InstantBackend:
    """An LLM that answers at once (the prefill run's): replies derived from the prompt."""

    name = "instant"

    def generate(self, batch, decoding):
        from recbole_llm.semantics.backends import Generation

        return [Generation(instant_answer(m), 60, 8, 0.0) for m in batch]


def child(work, kind, size, phase):
    """One measured process: ``prefill``, ``step`` or ``load``; returns its measurements."""
    from recbole.data.dataset import SequentialDataset

    from recbole_llm import registry, semantic_step
    from recbole_llm.semantics import encoder, files, intents, interests, pipeline, shared, typical

    config = bench_config(work, kind, size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = Stages()
    stages.wrap(encoder.TextEncoder, "encode", "encoding")
    stages.wrap(files, "write_table", "file writing")
    stages.wrap(files, "write_manifest", "file writing")
    start = time.perf_counter()
    if phase == "load":
        stages.wrap(files, "read_manifest", "manifest check")
        stages.wrap(SequentialDataset, "__init__", "RecBole loading")
        dataset_class = registry.get_dataset_class(config)
        method = "_load_semantics" if kind == "eimf" else "_load_intents"
        stages.wrap(dataset_class, method, "semantic files loading")
        semantic_step.prepare_semantics(config)
        dataset = dataset_class(config)
        counts = {"rows": len(dataset.inter_feat)}
    else:
        shared.make_backend = lambda config: InstantBackend()
        stages.wrap(semantic_step, "plain_dataset", "RecBole loading")
        stages.wrap(SequentialDataset, "build", "RecBole build (split)")
        stages.wrap(shared, "make_encoder", "encoder load")
        stages.wrap(shared, "make_generator", "reply cache open")
        stages.wrap(shared, "item_texts", "item texts")
        stages.wrap(shared, "ask", "replies from cache")
        for name, stage in (
            ("training_histories", "histories"),
            ("user_text_vectors", "user vectors"),
            ("select_typical_users", "typical selection"),
            ("interest_requests", "prompt building"),
            ("parse_interests", "reply parsing"),
        ):
            if hasattr(interests, name):
                stages.wrap(interests, name, stage)
        if hasattr(interests, "UserTextVectors"):  # made on demand, inside typical selection
            stages.wrap(interests.UserTextVectors, "_compute", "user vectors")
        stages.wrap(typical, "_affinity_propagation", "affinity propagation fits")
        stages.wrap(typical, "_nearest", "nearest exemplar")
        for name, stage in (
            ("sample_prefixes", "histories"),
            ("sample_histories", "histories"),
            ("intent_requests", "prompt building"),
            ("parse_item_name", "reply parsing"),
            ("top_items", "localisation"),
            ("localise", "localisation"),
        ):
            if hasattr(intents, name):
                stages.wrap(intents, name, stage)
        stages.wrap(intents.prompts, "llm4sbr_messages", "prompt building")
        manifest = json.load(open(semantic_step.run_pipeline(config, kind)))
        counts = manifest["counts"]
        counts.pop("intents_from_llm", None)
        counts = {k: v for k, v in counts.items() if isinstance(v, int)}
        counts["encoder_texts_encoded"] = manifest["encoder_texts_encoded"]
        del pipeline  # imported so that its modules are the ones wrapped
    total = time.perf_counter() - start
    seconds = dict(stages.seconds)
    seconds["other"] = max(0.0, total - sum(seconds.values()))
    return {
        "kind": kind,
        "size": size,
        "phase": phase,
        "total": total,
        "seconds": seconds,
        "calls": dict(stages.calls),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_mib": baseline,
        "counts": counts,
    }


def run_child(work, kind, size, phase, limit):
    out = os.path.join(work, f"{dataset_name(kind, size)}.{phase}.json")
    command = [sys.executable, os.path.abspath(__file__), "--_child", phase, "--kind", kind]
    command += ["--sizes", str(size), "--work", work]
    env = dict(os.environ, PYTHONPATH=REPO, RESULT_FILE=out)
    start = time.perf_counter()
    try:
        subprocess.run(command, env=env, check=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "size": size, "phase": phase, "timeout": limit}
    result = json.load(open(out))
    result["wall"] = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- report


def load_results(work, path=None):
    path = path or os.path.join(work, "results.json")
    return json.load(open(path)) if os.path.isfile(path) else {}


def save_result(work, result):
    results = load_results(work)
    results[f"{result['kind']}/{result['size']}/{result['phase']}"] = result
    json.dump(results, open(os.path.join(work, "results.json"), "w"), indent=1)


def _ratio(a, b):
    return f"{b / a:.1f}x" if a > 0.05 and b > 0 else "-"


def report(work, path=None):
    """The measured tables, ratios and projections, as Markdown."""
    results, lines = load_results(work, path), []
    for kind in KINDS:
        for phase in ("step", "load"):
            rows = sorted(
                (r for r in results.values() if r["kind"] == kind and r["phase"] == phase),
                key=lambda r: r["size"],
            )
            rows = [r for r in rows if "timeout" not in r]
            if not rows:
                continue
            sizes = [r["size"] for r in rows]
            what = "semantic step" if phase == "step" else "dataset loading"
            unit = "users" if kind == "eimf" else "sessions"
            lines += ["", f"{kind.upper()} {what} (seconds; {unit})", ""]
            head = [f"{s:,}" for s in sizes] + [f"{a:,} -> {b:,}" for a, b in zip(sizes, sizes[1:])]
            lines += ["| stage | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
            stages = sorted({s for r in rows for s in r["seconds"]}, key=lambda s: s == "other")
            table = [(s, [r["seconds"].get(s, 0.0) for r in rows]) for s in stages]
            table.append(("**total**", [r["total"] for r in rows]))
            table.append(("peak MiB (ru_maxrss)", [r["peak_mib"] for r in rows]))
            for stage, values in table:
                cells = [
                    f"{v:.1f}" if stage != "peak MiB (ru_maxrss)" else f"{v:.0f}" for v in values
                ]
                cells += [_ratio(a, b) for a, b in zip(values, values[1:])]
                lines.append(f"| {stage} | " + " | ".join(cells) + " |")
            base = rows[0]["baseline_mib"]
            lines.append(f"\nPeak after imports (baseline): {base:.0f} MiB.")
            if len(rows) >= 2:
                a, b = rows[-2], rows[-1]
                factor = math.log(b["size"] * 10 / b["size"]) / math.log(b["size"] / a["size"])
                # item texts are encoded once for every size (whichever run came first): the
                # projection is of the rest, which grows with the users or sessions
                a_rest, b_rest = (r["total"] - r["seconds"].get("encoding", 0.0) for r in (a, b))
                total = b_rest * (b_rest / a_rest) ** factor
                extra = (b["peak_mib"] - base) * (
                    (b["peak_mib"] - base) / max(1, a["peak_mib"] - base)
                ) ** factor
                lines.append(
                    f"Projection (not measured) to {b['size'] * 10:,} {unit} from the last ratio: "
                    f"about {total:.0f} s without item encoding, and {base + extra:.0f} MiB."
                )
    runs = [r for r in results.values() if r["phase"] != "load" and "timeout" not in r]
    encoded = [r for r in runs if r["counts"].get("encoder_texts_encoded", 0) >= 1000]
    if encoded:
        r = max(encoded, key=lambda r: r["counts"]["encoder_texts_encoded"])
        n = r["counts"]["encoder_texts_encoded"]
        per = r["seconds"]["encoding"] / n
        lines.append(
            f"\nEncoder (MiniLM, CPU): {n:,} new texts in {r['seconds']['encoding']:.0f} s = "
            f"{1000 * per:.1f} ms per text ({dataset_name(r['kind'], r['size'])}'s {r['phase']} run); "
            f"1M distinct item texts would take about {per * 1e6 / 3600:.1f} h."
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=KINDS, default="eimf")
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bench-scale"))
    parser.add_argument("--phases", nargs="*", default=["step", "load"])
    parser.add_argument("--limit", type=int, default=1800, help="seconds per process")
    parser.add_argument("--report", action="store_true", help="print every size measured")
    parser.add_argument("--results", help="the results file to report (default: in --work)")
    parser.add_argument("--clean", action="store_true", help="remove --work and exit")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)
        return
    if args._child:
        sys.argv = sys.argv[:1]
        result = child(args.work, args.kind, args.sizes[0], args._child)
        json.dump(result, open(os.environ["RESULT_FILE"], "w"))
        return
    os.makedirs(args.work, exist_ok=True)
    for size in args.sizes:
        counts = make_data(args.work, args.kind, size, args.items)
        print(f"{dataset_name(args.kind, size)}: {counts}", flush=True)
        for phase in args.phases:
            result = run_child(args.work, args.kind, size, phase, args.limit)
            save_result(args.work, result)
            shown = "timeout" if "timeout" in result else f"{result['total']:.1f} s"
            peak = f", peak {result['peak_mib']:.0f} MiB" if "peak_mib" in result else ""
            print(f"  {phase}: {shown}{peak}", flush=True)
    if args.report or not args.sizes:
        print(report(args.work, args.results))


if __name__ == "__main__":
    main()
