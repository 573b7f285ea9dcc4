"""EIMF's training and inference cost against its backbone, under one config.

    python benchmarks/bench_eimf_speed.py [--backbones REMI ComiRecSA ComiRecDR MIND]
                                          [--config_files benchmarks/configs/ml-100k-seq.yaml]

For each backbone: one training epoch of the backbone alone and of EIMF around it (each with
its own dataloader, so EIMF's semantic batching is counted), and one full-ranking evaluation of
the test set, alternating the two models ``--repeats`` times and keeping each one's fastest
time (the least disturbed by other work on the machine). Prints seconds and the ratios
EIMF / backbone (goals: training <= 1.25x, inference <= 1.05x).
"""

import argparse
import sys
import time


def build(model, dataset, config_files, extra):
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=extra)
    init_seed(config["seed"], config["reproducibility"])
    _, model_object, trainer, loaders = _build(config)
    return trainer, loaders


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument(
        "--backbones", nargs="+", default=["REMI", "ComiRecSA", "ComiRecDR", "MIND"]
    )
    parser.add_argument(
        "--config_files", nargs="*", default=["benchmarks/configs/ml-100k-seq.yaml"]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data_path", default="dataset")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    extra = {
        "data_path": args.data_path,
        "state": "WARNING",
        "show_progress": False,
        "save_dataset": False,
    }

    rows = []
    for backbone in args.backbones:
        base_trainer, (base_train, _, base_test) = build(
            backbone, args.dataset, args.config_files, extra
        )
        eimf_trainer, (eimf_train, _, eimf_test) = build(
            "EIMF", args.dataset, args.config_files, dict(extra, backbone=backbone)
        )
        train = {"base": [], "eimf": []}
        infer = {"base": [], "eimf": []}
        for repeat in range(args.repeats):
            for name, trainer, loader, test in (
                ("base", base_trainer, base_train, base_test),
                ("eimf", eimf_trainer, eimf_train, eimf_test),
            ):
                train[name].append(timed(trainer._train_epoch, loader, repeat))
                infer[name].append(timed(trainer.evaluate, test, load_best_model=False))
        best = {k: min(v) for k, v in train.items()}
        best_infer = {k: min(v) for k, v in infer.items()}
        rows.append((backbone, best["base"], best["eimf"], best_infer["base"], best_infer["eimf"]))
        print(
            f"{backbone:10s} epoch {best['base']:6.1f} s -> EIMF {best['eimf']:6.1f} s "
            f"({best['eimf'] / best['base']:.2f}x); test inference {best_infer['base']:.2f} s -> "
            f"{best_infer['eimf']:.2f} s ({best_infer['eimf'] / best_infer['base']:.2f}x)",
            flush=True,
        )
    print(
        "\n| backbone | epoch s | EIMF epoch s | ratio | inference s | EIMF inference s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backbone, base, eimf, base_i, eimf_i in rows:
        print(
            f"| {backbone} | {base:.1f} | {eimf:.1f} | {eimf / base:.2f} | {base_i:.2f} | {eimf_i:.2f} | {eimf_i / base_i:.2f} |"
        )


if __name__ == "__main__":
    main()
