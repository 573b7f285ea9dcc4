"""Full-ranking evaluation: our trainer's against RecBole 1.2.1's own way, same model and data.

    python benchmarks/bench_eval.py --data_path /work/data       # REMI, SASRec on amazon-beauty
    python benchmarks/bench_eval.py --dataset ml-100k --models REMI SASRec \\
        --config_files benchmarks/configs/ml-100k-seq.yaml benchmarks/configs/signal.yaml

Two changes make one validation pass cheaper, both measured here on the same trained-for-zero
model (the cost does not depend on the weights):

- ``rec.topk`` from the positive pairs (``recbole_llm.evaluator.TopkCollector``) instead of
  RecBole's dense ``[B, N]`` indicator matrix (its ``Collector``); with ``mask_history`` both the
  plain and the masked rankings are collected, so this counts twice;
- a multi-interest model's scores as one ``[B, N]`` product per interest with a running maximum
  instead of the max over a ``[B, K, N]`` tensor (single-vector models are unchanged).

"before" swaps RecBole's ``Collector`` back in and scores multi-interest models the old way;
"after" is the trainer as it is. They alternate ``--repeats`` times and each keeps its fastest
time. The metrics of both must agree (the collectors exactly; the scores to float rounding, so
a tie broken the other way could move a metric in its last digits: the largest difference is
printed). Prints seconds and the ratio before / after.
"""

import argparse
import sys
import time

import torch
from recbole.evaluator import Collector

DEFAULT_FILES = ["benchmarks/configs/amazon-beauty-seq.yaml", "benchmarks/configs/signal.yaml"]


def dense_score_all(self, interests, item_table):
    """The multi-interest scores as computed before: the max over ``[B, K, N]``."""
    return self._best_interest(interests.vectors @ item_table.T, interests.mask)


def before(trainer, model_class):
    """Put RecBole's collectors and (for a multi-interest ``model_class``) the dense scoring
    back; returns a function undoing it."""
    saved = (trainer.eval_collector, getattr(trainer, "masked_collector", None))
    trainer.eval_collector = Collector(trainer.config)
    trainer.eval_collector.data_struct = saved[0].data_struct
    if saved[1] is not None:
        trainer.masked_collector = Collector(trainer.config)
        trainer.masked_collector.data_struct = saved[1].data_struct
    own = model_class.__dict__.get("score_all") if model_class is not None else None
    if model_class is not None:
        model_class.score_all = dense_score_all

    def undo():
        trainer.eval_collector = saved[0]
        if saved[1] is not None:
            trainer.masked_collector = saved[1]
        if own is not None:
            model_class.score_all = own
        elif model_class is not None:
            del model_class.score_all

    return undo


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", nargs="+", default=["REMI", "SASRec"])
    parser.add_argument("--config_files", nargs="*", default=DEFAULT_FILES)
    parser.add_argument("--repeats", type=int, default=3, help="validation passes timed, each")
    parser.add_argument("--data_path", default="dataset")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    extra = {"data_path": args.data_path, "state": "WARNING", "show_progress": False}
    rows = []
    for name in args.models:
        config = Config(
            model=name, dataset=args.dataset, config_file_list=args.config_files, config_dict=extra
        )
        init_seed(config["seed"], config["reproducibility"])
        _, model, trainer, (_, valid, _) = _build(config)
        # the class defining score_all is patched on its subclass, where lookup starts
        model_class = type(model) if hasattr(model, "score_all") else None
        times = {"before": [], "after": []}
        results = {}
        with torch.no_grad():
            for _ in range(args.repeats):
                undo = before(trainer, model_class)
                try:
                    start = time.perf_counter()
                    results["before"] = trainer.evaluate(valid, load_best_model=False)
                    times["before"].append(time.perf_counter() - start)
                finally:
                    undo()
                start = time.perf_counter()
                results["after"] = trainer.evaluate(valid, load_best_model=False)
                times["after"].append(time.perf_counter() - start)
        gap = max(abs(results["before"][k] - results["after"][k]) for k in results["after"])
        best = {k: min(v) for k, v in times.items()}
        rows.append((name, best["before"], best["after"], gap, len(results["after"])))
        print(
            f"{name:10s} validation {best['before']:6.2f} s -> {best['after']:6.2f} s "
            f"({best['before'] / best['after']:.2f}x faster); largest metric difference {gap:.1e}",
            flush=True,
        )
    print(
        f"\nFull-ranking validation on {args.dataset} ({', '.join(args.config_files)}), "
        f"fastest of {args.repeats} alternating passes, torch threads {torch.get_num_threads()}"
    )
    print("| model | RecBole's collector s | ours s | speed-up | largest metric difference |")
    print("|---|---:|---:|---:|---:|")
    for name, old, new, gap, count in rows:
        print(
            f"| {name} | {old:.2f} | {new:.2f} | {old / new:.2f}x | {gap:.1e} ({count} metrics) |"
        )


if __name__ == "__main__":
    main()
