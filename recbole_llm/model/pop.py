r"""
Pop
################################################

RecBole's most-popular baseline with its counting fixed. RecBole 1.2.1's
``model/general_recommender/pop.py`` (``calculate_loss``) counts with
``item_cnt[item] = item_cnt[item] + 1``, an index assignment that adds one per batch however
often an item occurs in it, and counts every item of the batch, including the uniform
negatives RecBole samples for point-wise models by default (``train_neg_sample_args``). Its
ranking therefore depends on the batch size and the seed, and is not item popularity: on
ml-100k (batch 512) its counts total 160,226 for 98,114 training interactions and the top-10
order changes with the seed.
"""

import torch
from recbole.model.general_recommender.pop import Pop as RecBolePop


class Pop(RecBolePop):
    r"""Recommends the items with the most training interactions (ties in item order).

    Counts each positive training interaction once (``index_add_``); sampled negatives (rows
    whose label is 0) are not counted. Scoring, ``predict`` and checkpoints are RecBole's.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]

    def calculate_loss(self, interaction):
        item = interaction[self.ITEM_ID]
        if self.LABEL in interaction:  # point-wise batches with sampled negatives carry labels
            item = item[interaction[self.LABEL] > 0]
        self.item_cnt.index_add_(0, item, torch.ones_like(item).unsqueeze(1))
        self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
        return torch.nn.Parameter(torch.zeros(1)).to(self.device)
