"""Why a multi-interest model ranks as it does: a diagnostic, on validation and test.

    python benchmarks/probe_interests.py --models ComiRecSA REMI [--epochs 8]

Trains each model under the shared config (early stopping on validation as usual, at most
``--epochs`` epochs), then reports on the test users:

- routing concentration: the mean, over users and interests, of the largest attention (or
  coupling) weight an interest puts on one history position (1.0 = every interest is one item,
  the "routing collapse" REMI's regulariser is built against), and how many distinct history
  positions the K interests' peaks cover (K = all different);
- interest similarity: mean pairwise cosine between a user's K interest vectors;
- repeats: the share of each user's top-10 that is already in its history (RecBole's
  sequential protocol ranks history items too);
- test NDCG@10 as evaluated, and with each user's history items masked from its ranking.
"""

import argparse
import sys

import numpy as np
import torch


def probe(model_name, config_files, epochs, data_path):
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    config = Config(
        model=model_name,
        dataset="ml-100k",
        config_file_list=config_files,
        config_dict={
            "data_path": data_path,
            "epochs": epochs,
            "state": "WARNING",
            "show_progress": False,
            "save_dataset": False,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    _, model, trainer, (train, valid, test) = _build(config)
    trainer.fit(train, valid, saved=True, verbose=False)
    trainer.evaluate(test, load_best_model=True)  # loads the best validation epoch
    model.eval()

    peaks, coverage, similarity, repeats, ndcg, ndcg_masked = [], [], [], [], [], []
    with torch.no_grad():
        for batch in test:
            interaction, history_index, positive_u, positive_i = batch
            item_seq = interaction[model.ITEM_SEQ]
            seq_len = interaction[model.ITEM_SEQ_LEN]
            interests = model.encode(item_seq, seq_len)
            routing = interests.routing  # [B, K, L]
            peaks.append(routing.max(dim=-1).values.mean(dim=-1))
            top_position = routing.argmax(dim=-1)  # [B, K]
            coverage.append(torch.tensor([len(set(row.tolist())) for row in top_position]))
            vectors = torch.nn.functional.normalize(interests.vectors, dim=-1)
            cosine = vectors @ vectors.transpose(1, 2)
            k = cosine.size(1)
            off_diagonal = (cosine.sum(dim=(1, 2)) - cosine.diagonal(dim1=1, dim2=2).sum(-1)) / (
                k * (k - 1)
            )
            similarity.append(off_diagonal)

            scores = model.full_sort_predict(interaction).view(len(item_seq), -1)
            scores[:, 0] = -np.inf
            target = interaction[model.POS_ITEM_ID]
            history = torch.zeros_like(scores, dtype=torch.bool)
            history.scatter_(1, item_seq, True)
            history[:, 0] = False
            for masked in (False, True):
                s = scores.masked_fill(history, -np.inf) if masked else scores
                top = s.topk(10, dim=1).indices
                hit = top == target.unsqueeze(1)
                gain = (hit.float() / torch.log2(torch.arange(2, 12).float())).sum(1)
                (ndcg_masked if masked else ndcg).append(gain)
                if not masked:
                    repeats.append(history.gather(1, top).float().mean(1))
    cat = lambda parts: torch.cat(parts).float().mean().item()  # noqa: E731
    return {
        "model": model_name,
        "epochs": len(trainer.epoch_seconds),
        "peak attention": cat(peaks),
        "distinct peaks (of K)": cat(coverage),
        "interest cosine": cat(similarity),
        "top-10 repeats": cat(repeats),
        "test NDCG@10": cat(ndcg),
        "masked NDCG@10": cat(ndcg_masked),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["ComiRecSA", "REMI"])
    parser.add_argument(
        "--config_files", nargs="*", default=["benchmarks/configs/ml-100k-seq.yaml"]
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--data_path", default="dataset")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    rows = [probe(m, args.config_files, args.epochs, args.data_path) for m in args.models]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print(
            "| "
            + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values())
            + " |"
        )


if __name__ == "__main__":
    main()
