"""Evaluation parts of our trainers: RecBole's collector with a sparse ``rec.topk``, and an
evaluator that keeps what it evaluated, for per-user metric values.
"""

import inspect

import torch
from recbole.evaluator import Collector, Evaluator
from recbole.evaluator.base_metric import TopkMetric


class TopkCollector(Collector):
    """RecBole's collector, with ``rec.topk`` built from the positive pairs.

    RecBole marks each batch's positives in a dense ``[B, N]`` int matrix, sums it for the
    positive counts and gathers the top-k flags from it; with 12,101 items and 4,096 rows that
    matrix costs more than the ranking's ``topk``. The same tensor (flags of the top-k items,
    then each row's count of distinct positives, int64) comes from the distinct ``(row, item)``
    pairs alone. Every other resource is collected as RecBole does.
    """

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        if not self.register.need("rec.topk"):
            return super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        rows, items = scores_tensor.shape
        device = scores_tensor.device
        _, topk_idx = torch.topk(scores_tensor, max(self.topk), dim=-1)
        pairs = torch.unique(
            positive_u.to(device=device, dtype=torch.long) * items
            + positive_i.to(device=device, dtype=torch.long)
        )
        pos_len = torch.bincount(pairs // items, minlength=rows).unsqueeze(1)
        top_pairs = torch.arange(rows, device=device).unsqueeze(1) * items + topk_idx
        pos_idx = torch.isin(top_pairs, pairs).to(pos_len.dtype)
        self.data_struct.update_tensor("rec.topk", torch.cat((pos_idx, pos_len), dim=1))
        setattr(self.register, "rec.topk", False)  # the rest as RecBole collects it
        try:
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        finally:
            setattr(self.register, "rec.topk", True)


class RecordingEvaluator(Evaluator):
    """RecBole's evaluator that keeps the last evaluated data, for per-user metric values."""

    last_struct = None

    def evaluate(self, dataobject):
        self.last_struct = dataobject
        return super().evaluate(dataobject)

    def per_user(self):
        """``{"ndcg@10": array[n_users], ...}`` for the top-k metrics of the last evaluation,
        in the evaluation dataloader's user order (RecBole only returns their means)."""
        if self.last_struct is None:
            raise RuntimeError("nothing has been evaluated yet")
        values = {}
        for name, metric in self.metric_class.items():
            if not isinstance(metric, TopkMetric):
                continue
            pos_index, pos_len = metric.used_info(self.last_struct)
            takes_len = len(inspect.signature(metric.metric_info).parameters) > 1
            info = (
                metric.metric_info(pos_index, pos_len)
                if takes_len
                else metric.metric_info(pos_index)
            )
            for k in metric.topk:
                values[f"{name}@{k}"] = info[:, k - 1]
        return values
