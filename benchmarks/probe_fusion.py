"""Which part of LLM4SBR's residual fusion moves it away from its backbone?

    OMP_NUM_THREADS=1 python benchmarks/probe_fusion.py --variants backbone frozen view gates intent \
        --seed 2020 --data_path DIR

Trains, under the signal suite's config (benchmarks/configs/session.yaml + signal.yaml), the
backbone alone and LLM4SBR on it with the mean-intent control and no alignment loss (so no LLM
information and no extra loss), with every trainable part of the residual fusion but one frozen
at its zero initialisation: ``frozen`` (none trainable: LLM4SBR then scores as its backbone),
``view`` (only ``W`` on the gated views), ``gates`` (only the gates ``q``), ``intent`` (only
``U`` on the intents). Prints each variant's best validation score (the config's valid_metric).
No checkpoint is saved.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("gates", "view_residual", "intent_residual")
TRAINABLE = {
    "frozen": (),
    "view": ("view_residual",),
    "gates": ("gates",),
    "intent": ("intent_residual",),
}


def train(variant, backbone, seed, data_path):
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    settings = {"seed": seed, "state": "WARNING", "show_progress": False, "data_path": data_path}
    if variant != "backbone":
        settings.update(
            backbone=backbone, fusion="residual", intent_control="mean", alignment=False
        )
    config = Config(
        model=backbone if variant == "backbone" else "LLM4SBR",
        dataset="ml-100k-session",
        config_file_list=[
            os.path.join(HERE, "configs", n) for n in ("session.yaml", "signal.yaml")
        ],
        config_dict=settings,
    )
    init_seed(config["seed"], config["reproducibility"])
    _, model, trainer, (train_data, valid_data, _) = _build(config)
    for part in PARTS if variant != "backbone" else ():
        if part not in TRAINABLE[variant]:
            for parameter in getattr(model, part).parameters():
                parameter.requires_grad_(False)
    best, _ = trainer.fit(train_data, valid_data, saved=False, verbose=False)
    return best, config["valid_metric"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["backbone", *TRAINABLE])
    parser.add_argument("--backbone", default="SASRec")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--data_path", default=os.path.abspath("dataset"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too
    print("| variant | best validation | seconds |\n|---|---:|---:|")
    for variant in args.variants:
        start = time.time()
        best, metric = train(variant, args.backbone, args.seed, args.data_path)
        print(f"| {variant} | {metric} {best:.4f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
