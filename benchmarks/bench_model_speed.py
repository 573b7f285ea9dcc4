"""An LLM-enhanced model's training and inference cost against its own backbone, one config.

    python benchmarks/bench_model_speed.py                     # EIMF on ml-100k, four backbones
    python benchmarks/bench_model_speed.py --model LLM4SBR --dataset ml-100k-session \\
        --backbones SRGNN GRU4Rec SASRec --config_files benchmarks/configs/session.yaml \\
        --set intent_source=last_item semantics_dir=control-last-item

For each backbone: one training epoch of the backbone alone and of the model around it (each
with its own dataloader, so the semantic batching is counted), alternating the two
``--repeats`` times, then one full-ranking evaluation of the test set each, alternating
``--infer_repeats`` times (an evaluation takes a fraction of a second on ml-100k, so one timing
is mostly noise); each keeps its fastest time (the least disturbed by other work on the
machine). Prints seconds and the ratios model /
backbone. Goals: EIMF training <= 1.25x, inference <= 1.05x (inference is the backbone's);
LLM4SBR training <= 1.5x (the paper's code: 3.0-3.7x).

``--set key=value`` adds settings to the enhanced model only. LLM4SBR's cost does not depend on
where its intent vectors come from, so ``intent_source=last_item`` (no LLM) times it exactly
on a dataset whose LLM replies are not all made yet.
"""

import argparse
import sys
import time

import yaml

DEFAULT_BACKBONES = {
    "EIMF": ["REMI", "ComiRecSA", "ComiRecDR", "MIND"],
    "LLM4SBR": ["SRGNN", "GRU4Rec", "SASRec", "NARM", "STAMP", "GCSAN"],
}


def build(model, dataset, config_files, extra):
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=extra)
    init_seed(config["seed"], config["reproducibility"])
    _, _, trainer, loaders = _build(config)
    return trainer, loaders


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def parse_settings(pairs):
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    return settings


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="EIMF", choices=sorted(DEFAULT_BACKBONES))
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--backbones", nargs="+", default=None)
    parser.add_argument(
        "--config_files", nargs="*", default=["benchmarks/configs/ml-100k-seq.yaml"]
    )
    parser.add_argument("--set", nargs="*", default=[], help="key=value for the model only")
    parser.add_argument("--repeats", type=int, default=3, help="training epochs timed, each")
    parser.add_argument("--infer_repeats", type=int, default=20, help="evaluations timed, each")
    parser.add_argument("--data_path", default="dataset")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    extra = {
        "data_path": args.data_path,
        "state": "WARNING",
        "show_progress": False,
        "save_dataset": False,
    }
    settings = parse_settings(args.set)
    name = args.model

    rows = []
    for backbone in args.backbones or DEFAULT_BACKBONES[name]:
        base_trainer, (base_train, _, base_test) = build(
            backbone, args.dataset, args.config_files, extra
        )
        model_trainer, (model_train, _, model_test) = build(
            name, args.dataset, args.config_files, dict(extra, backbone=backbone, **settings)
        )
        train = {"base": [], "model": []}
        infer = {"base": [], "model": []}
        for repeat in range(args.repeats):
            for key, trainer, loader in (
                ("base", base_trainer, base_train),
                ("model", model_trainer, model_train),
            ):
                train[key].append(timed(trainer._train_epoch, loader, repeat))
        for _ in range(args.infer_repeats):
            for key, trainer, test in (
                ("base", base_trainer, base_test),
                ("model", model_trainer, model_test),
            ):
                infer[key].append(timed(trainer.evaluate, test, load_best_model=False))
        best = {k: min(v) for k, v in train.items()}
        best_infer = {k: min(v) for k, v in infer.items()}
        rows.append(
            (backbone, best["base"], best["model"], best_infer["base"], best_infer["model"])
        )
        print(
            f"{backbone:10s} epoch {best['base']:6.1f} s -> {name} {best['model']:6.1f} s "
            f"({best['model'] / best['base']:.2f}x); test inference {best_infer['base']:.2f} s -> "
            f"{best_infer['model']:.2f} s ({best_infer['model'] / best_infer['base']:.2f}x)",
            flush=True,
        )
    print(
        f"\n{name} on {args.dataset}, best of {args.repeats} epochs and "
        f"{args.infer_repeats} evaluations" + (f", model settings {settings}" if settings else "")
    )
    print(
        f"| backbone | epoch s | {name} epoch s | ratio | inference s | {name} inference s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backbone, base, model, base_i, model_i in rows:
        print(
            f"| {backbone} | {base:.1f} | {model:.1f} | {model / base:.2f} "
            f"| {base_i:.2f} | {model_i:.2f} | {model_i / base_i:.2f} |"
        )


if __name__ == "__main__":
    main()
