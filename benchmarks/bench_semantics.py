"""The LLM-semantics step's cost, in one run: LLM calls per training user, the step's
generation throughput against the backend's raw speed, encoder texts/s, and first vs cached
run time.

    python benchmarks/bench_semantics.py [--dataset ml-100k] [--model EIMF] [--raw_prompts N]

The first run uses a fresh, temporary cache (so every prompt is generated); the cached run
repeats it with that cache. Raw speed: the same backend generating the step's prompts
(``--raw_prompts``, default all) directly, in the same batches, without the step around it.
Model loading is timed apart from generation in both.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="EIMF", help="EIMF or LLM4SBR")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--raw_prompts", type=int, default=0, help="0: all of the step's prompts")
    parser.add_argument("--config_files", nargs="*", default=None)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]

    from recbole_llm.config import Config
    from recbole_llm.semantic_step import run_pipeline
    from recbole_llm.semantics.encoder import TextEncoder
    from recbole_llm.semantics.generator import make_backend

    work = tempfile.mkdtemp(prefix="bench-semantics-")
    try:
        data_root = os.path.join(work, "data")
        source = os.path.join(os.path.abspath(args.data_path), args.dataset)
        shutil.copytree(
            source,
            os.path.join(data_root, args.dataset),
            ignore=lambda d, names: [
                n for n in names if not n.endswith((".inter", ".item", ".user"))
            ],
        )
        config = Config(
            model=args.model,
            dataset=args.dataset,
            config_file_list=args.config_files,
            config_dict={
                "data_path": data_root,
                "semantics_cache_dir": os.path.join(work, "cache"),
                "show_progress": False,
                "state": "WARNING",
            },
        )
        kind = config.model_class.semantics
        start = time.perf_counter()
        manifest = json.load(open(run_pipeline(config, kind)))
        first = time.perf_counter() - start
        start = time.perf_counter()
        cached = json.load(open(run_pipeline(config, kind)))
        second = time.perf_counter() - start
        generation = manifest["generation"]

        # raw backend speed on the step's own first prompts, same batch size
        backend = make_backend(config)
        decoding = {
            "max_new_tokens": config["llm_max_new_tokens"],
            "repetition_penalty": config["llm_repetition_penalty"],
            "greedy": True,
        }
        requests = _step_requests(config, kind, manifest)[: args.raw_prompts or None]
        batch = config["llm_batch_size"]
        raw_tokens, start = 0, time.perf_counter()
        for i in range(0, len(requests), batch):
            raw_tokens += sum(
                r.completion_tokens for r in backend.generate(requests[i : i + batch], decoding)
            )
        raw_seconds = time.perf_counter() - start

        encoder = TextEncoder(
            config["encoder_model"], cache_dir=os.path.join(work, "fresh-encoder"), progress=False
        )
        texts = [f"sample text number {i} about movies and genres" for i in range(512)]
        start = time.perf_counter()
        encoder.encode(texts)
        encoder_rate = len(texts) / (time.perf_counter() - start)

        users = manifest["counts"].get("training_users") or manifest["counts"].get("samples")
        step_rate = generation["completion_tokens"] / generation["wall_seconds"]
        raw_rate = raw_tokens / raw_seconds
        print(
            f"{args.model} semantics on {args.dataset} with {config['llm_backend']}:{config['llm_model']}"
        )
        print(
            f"  LLM calls: {generation['calls']} for {users} training users/samples "
            f"= {generation['calls'] / users:.3f} per user"
        )
        print(
            f"  step generation: {generation['completion_tokens']} new tokens in "
            f"{generation['wall_seconds']:.1f} s = {step_rate:.2f} tok/s "
            f"(model load {generation['load_seconds']:.1f} s, not counted)"
        )
        print(
            f"  raw backend:     {raw_tokens} new tokens in {raw_seconds:.1f} s = {raw_rate:.2f} tok/s "
            f"({len(requests)} prompts) -> step / raw = {step_rate / raw_rate:.2f}"
        )
        print(f"  encoder: {encoder_rate:.0f} texts/s")
        print(
            f"  first run {first:.1f} s, cached run {second:.1f} s ({100 * second / first:.1f} %), "
            f"cached run LLM calls: {cached['generation']['calls']}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _step_requests(config, kind, manifest):
    """The step's prompts for its typical users, built by the pipeline's own function."""
    from recbole_llm.semantic_step import plain_dataset
    from recbole_llm.semantics.history import training_histories
    from recbole_llm.semantics.interests import interest_requests
    from recbole_llm.semantics.text import item_texts

    if kind != "eimf":
        raise SystemExit("raw-speed prompts are rebuilt for EIMF only")
    histories = training_histories(plain_dataset(config).build()[0])
    users = list(manifest["interests"])
    texts = item_texts(config, sorted({i for u in users for i in histories[u]})).texts
    return interest_requests(config, users, histories, texts)


if __name__ == "__main__":
    main()
