"""Does the LLM signal reach the ranking? A diagnostic for EIMF and LLM4SBR.

    python benchmarks/probe_signal.py --model_file saved/LLM4SBR-....pth
    python benchmarks/probe_signal.py --model LLM4SBR --dataset ml-100k-session \
        --config_files benchmarks/configs/session.yaml --set backbone=SASRec epochs=10

Loads a checkpoint (or trains the model first, early stopping on validation as usual) and
prints, on the test samples:

- NDCG@10 with the real semantics, with intents shuffled across the samples of each batch and
  with every sample given the mean intent (LLM4SBR; EIMF predicts from behaviour alone, so
  its inference has nothing to shuffle), and the share of each top-10 list that survives;
- each loss term's share of the gradient on the backbone's parameters (the norm of that term's
  gradient over the sum of the terms' norms, averaged over ``--batches`` training batches): a
  term with share 0 cannot shape the backbone.
"""

import argparse
import sys

import torch


def _top10_and_ndcg(model, test_data):
    lists, gains = [], []
    discount = 1.0 / torch.log2(torch.arange(2, 12).float())
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = float("-inf")
            top = scores.topk(10, dim=1).indices
            hit = top == interaction[model.POS_ITEM_ID].unsqueeze(1)
            lists.append(top)
            gains.append((hit.float() * discount).sum(dim=1))
    return torch.cat(lists), torch.cat(gains).mean().item()


def _overlap(a, b):
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / (10 * len(a))


def inference_controls(model, test_data):
    """``{semantics: (NDCG@10, share of the real top-10 kept)}`` for LLM4SBR."""
    model.eval()
    real, ndcg = _top10_and_ndcg(model, test_data)
    rows = {"real": (ndcg, 1.0)}
    if not hasattr(model, "intent_control"):
        return rows
    saved = model.intent_control, model.control_phase
    for control in ("shuffle", "mean"):
        model.intent_control, model.control_phase = control, "inference"
        lists, ndcg = _top10_and_ndcg(model, test_data)
        rows[control] = (ndcg, _overlap(real, lists))
    model.intent_control, model.control_phase = saved
    return rows


def loss_names(model, batch):
    """Names of the terms ``calculate_loss`` returns, in order."""
    name = type(model).__name__
    if name == "LLM4SBR":
        names = ["cross-entropy"]
        if model.use_alignment and model.intent_loss_weight:
            names.append("alignment + uniformity")
        return names + ["backbone regulariser"]
    if name == "EIMF":
        names = ["recommendation"]
        interests = model.behaviour.encode(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        if model.behaviour.regularization(interests) is not None:
            names.append("backbone regulariser")
        if model.semantic_weight and model.semantic_control != "item_align_only":
            names.append("semantic prediction")
        return names + (["alignment"] if model.align_weight else [])
    return ["loss"]


def gradient_shares(model, train_data, batches):
    """``{loss term: mean share of the backbone gradient norm}`` over ``batches`` batches."""
    model.train()
    parameters = [p for p in model.backbone.parameters() if p.requires_grad]
    totals = {}
    for i, batch in enumerate(train_data):
        if i == batches:
            break
        losses = model.calculate_loss(batch)
        losses = losses if isinstance(losses, tuple) else (losses,)
        names = loss_names(model, batch)[: len(losses)]
        norms = []
        for loss in losses:
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            norms.append(sum(g.pow(2).sum() for g in grads if g is not None) ** 0.5)
        total = sum(float(n) for n in norms) or 1.0
        for name, norm in zip(names, norms):
            totals[name] = totals.get(name, 0.0) + float(norm) / total
    return {name: value / min(batches, i + 1) for name, value in totals.items()}


def _load(args):
    from recbole_llm.quick_start import load_data_and_model

    if args.model_file:
        config, model, _, train, _, test = load_data_and_model(args.model_file)
        return model, train, test
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build

    settings = dict(pair.split("=", 1) for pair in args.set)
    config = Config(
        model=args.model,
        dataset=args.dataset,
        config_file_list=args.config_files,
        config_dict={"state": "WARNING", "show_progress": False, **settings},
    )
    init_seed(config["seed"], config["reproducibility"])
    _, model, trainer, (train, valid, test) = _build(config)
    trainer.fit(train, valid, saved=True, verbose=False)
    trainer.evaluate(test, load_best_model=True)
    return model, train, test


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_file", help="checkpoint to probe (else train --model)")
    parser.add_argument("--model", default="LLM4SBR")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--config_files", nargs="*", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="key=value config settings")
    parser.add_argument("--batches", type=int, default=20, help="training batches for shares")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]
    model, train, test = _load(args)
    print("| semantics at inference | test NDCG@10 | top-10 kept |\n|---|---:|---:|")
    for name, (ndcg, kept) in inference_controls(model, test).items():
        print(f"| {name} | {ndcg:.4f} | {kept:.3f} |")
    print("\n| loss term | share of the backbone gradient |\n|---|---:|")
    for name, share in gradient_shares(model, train, args.batches).items():
        print(f"| {name} | {share:.4f} |")


if __name__ == "__main__":
    main()
