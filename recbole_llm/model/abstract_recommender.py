"""Base class of the multi-interest sequential recommenders (ComiRec-SA/DR, MIND, REMI).

It fixes the small interface that EIMF wraps, so any of them can be EIMF's behaviour module:

- :meth:`~MultiInterestRecommender.encode` gives the K interest vectors of a batch of
  sequences (and which interests are active for each user);
- :meth:`~MultiInterestRecommender.readout` picks the interest for a target item (training);
- :meth:`~MultiInterestRecommender.recommendation_loss` and
  :meth:`~MultiInterestRecommender.regularization` are the model's own training terms.

Inference scores every item by its best-matching interest, ``max_k <v_k, e_i>``, which ranks
exactly like ComiRec's "retrieve top-N per interest, merge by score" (up to ties).
"""

from collections import namedtuple

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.model.layers import config_choice, sampled_softmax_loss, target_aware_readout

#: ``vectors`` [B, K, d]; ``mask`` [B, K] bool (True = active interest); ``routing`` [B, K, L]
#: (attention or coupling coefficients over positions).
Interests = namedtuple("Interests", ["vectors", "mask", "routing"])

LOSS_TYPES = ("CE", "SSM")
READOUTS = ("hard", "soft")


class MultiInterestRecommender(SequentialRecommender):
    """Shared training and scoring for multi-interest models; subclasses build ``extractor``.

    Config keys: ``hidden_size``, ``interest_num`` (K), ``loss_type`` (``CE`` full softmax or
    ``SSM`` sampled softmax with ``sample_num`` shared uniform negatives), ``readout``
    (``hard`` or ``soft``) and ``readout_pow`` (label-aware attention power for ``soft``).
    """

    input_type = InputType.POINTWISE
    #: allowed values of config keys, checked when the config is built (and here)
    config_choices = {"loss_type": LOSS_TYPES, "readout": READOUTS}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]  # item embedding and interest size
        self.interest_num = config["interest_num"]  # K
        self.loss_type = config["loss_type"]  # CE (full softmax) or SSM (sampled softmax)
        self.sample_num = config["sample_num"]  # negatives per batch for SSM
        self.hard_readout = config["readout"] == "hard"  # target-aware readout: hard or soft
        self.readout_pow = config["readout_pow"]  # label-aware attention power (soft readout)
        self.dropout_prob = config["dropout_prob"] or 0.0  # dropout on the history embeddings
        config_choice("loss_type", self.loss_type, LOSS_TYPES)
        config_choice("readout", config["readout"], READOUTS)
        if self.loss_type == "SSM" and not self.sample_num:
            raise ValueError("loss_type SSM needs sample_num > 0 (negatives per batch)")

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(self.dropout_prob)
        self.extractor = self.build_extractor(config)
        self.apply(self._init_weights)
        if hasattr(self.extractor, "reset_parameters"):
            self.extractor.reset_parameters()

    def build_extractor(self, config):
        """Return the ``nn.Module`` that maps (item embeddings, mask) to interests."""
        raise NotImplementedError

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.hidden_size**-0.5)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # ------------------------------------------------------------------ the wrapped interface
    def sequence_mask(self, item_seq, item_seq_len):
        """``[B, L]`` True at real positions (from lengths, whatever the padding holds)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        return positions.unsqueeze(0) < item_seq_len.unsqueeze(1)

    def active_interests(self, item_seq_len):
        """``[B, K]`` mask of interests in use per user; all of them unless overridden."""
        return None

    def encode(self, item_seq, item_seq_len):
        """The interests of a batch of sequences, as :data:`Interests`."""
        mask = self.sequence_mask(item_seq, item_seq_len)
        item_emb = self.embedding_dropout(self.item_embedding(item_seq)) * mask.unsqueeze(-1)
        interest_mask = self.active_interests(item_seq_len)
        vectors, routing = self.run_extractor(item_emb, mask, interest_mask)
        if interest_mask is not None:
            vectors = vectors * interest_mask.unsqueeze(-1)
        return Interests(vectors, interest_mask, routing)

    def run_extractor(self, item_emb, mask, interest_mask):
        """Call the extractor; returns ``(vectors, routing)``."""
        if interest_mask is None:
            return self.extractor(item_emb, mask)
        return self.extractor(item_emb, mask, interest_mask=interest_mask)

    def readout(self, interests, target_items):
        """One vector per row: the interest(s) matching the target item (training only)."""
        return target_aware_readout(
            interests.vectors,
            self.item_embedding(target_items),
            interests.mask,
            hard=self.hard_readout,
            power=self.readout_pow,
        )

    def recommendation_loss(self, user_emb, target_items):
        """Full softmax over all real items (CE) or sampled softmax (SSM)."""
        if self.loss_type == "SSM":
            return sampled_softmax_loss(
                user_emb, self.item_embedding.weight, target_items, self.sample_num
            )
        logits = user_emb @ self.item_embedding.weight.T
        logits[:, 0] = float("-inf")  # the padding id is never a class
        return nn.functional.cross_entropy(logits, target_items)

    def regularization(self, interests):
        """Extra training term from the interests (None if the model has none)."""
        return None

    # ------------------------------------------------------------------ RecBole's contract
    def forward(self, item_seq, item_seq_len):
        """Interest vectors ``[B, K, d]`` (zero for inactive interests)."""
        return self.encode(item_seq, item_seq_len).vectors

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target_items = interaction[self.POS_ITEM_ID]
        interests = self.encode(item_seq, item_seq_len)
        loss = self.recommendation_loss(self.readout(interests, target_items), target_items)
        regularization = self.regularization(interests)
        return loss if regularization is None else (loss, regularization)

    @staticmethod
    def _best_interest(scores, interest_mask):
        """Max over the interest axis (1), ignoring inactive interests."""
        if interest_mask is not None:
            mask = interest_mask if scores.dim() == 2 else interest_mask.unsqueeze(-1)
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.max(dim=1).values

    def score_targets(self, interests, target_emb):
        """Score one item per row (``[B, d]`` -> ``[B]``) by its best-matching interest."""
        scores = (interests.vectors * target_emb.unsqueeze(1)).sum(-1)
        return self._best_interest(scores, interests.mask)

    def score_all(self, interests, item_table):
        """Score every item (``[N, d]`` -> ``[B, N]``) by its best-matching interest.

        One ``[B, N]`` product per interest with a running maximum: the max over ``[B, K, N]``
        (to float rounding: a ``[B, d]`` product need not round as a ``[B * K, d]`` one does),
        without building that K-times larger tensor and reducing over its middle axis
        (``benchmarks/bench_eval.py`` measures the gain)."""
        vectors, mask = interests.vectors, interests.mask
        table = item_table.T
        best = None
        for k in range(vectors.size(1)):
            scores = vectors[:, k] @ table
            if mask is not None:
                scores = scores.masked_fill(~mask[:, k : k + 1], float("-inf"))
            if best is None:
                best = scores
            elif best.requires_grad:
                best = torch.maximum(best, scores)
            else:
                best = torch.maximum(best, scores, out=best)
        return best

    def predict(self, interaction):
        interests = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.score_targets(interests, self.item_embedding(interaction[self.ITEM_ID]))

    def full_sort_predict(self, interaction):
        interests = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.score_all(interests, self.item_embedding.weight)


class SingleInterestAdapter:
    """A RecBole sequential model with one vector per sequence (SASRec, GRU4Rec, NARM, ...)
    seen through the multi-interest interface, as the case K = 1.

    Its loss is the model's own full-softmax cross-entropy, computed exactly as the model's
    ``calculate_loss`` does. It is a plain object holding a reference: the model's parameters
    stay registered once, by whoever owns the model.
    """

    def __init__(self, model):
        if getattr(model, "loss_type", "CE") != "CE":
            raise ValueError(
                f"{type(model).__name__} as a backbone needs loss_type: CE (it has no sampled "
                f"negatives here), got '{model.loss_type}'."
            )
        self.model = model

    @property
    def item_embedding(self):
        return self.model.item_embedding

    def encode(self, item_seq, item_seq_len):
        vectors = self.model.forward(item_seq, item_seq_len)
        if vectors.dim() != 2:
            raise ValueError(
                f"{type(self.model).__name__} gives {tuple(vectors.shape)} per batch, not one "
                "vector per sequence; it cannot be a backbone."
            )
        return Interests(vectors.unsqueeze(1), None, None)

    def readout(self, interests, target_items):
        return interests.vectors[:, 0]

    def recommendation_loss(self, user_emb, target_items):
        logits = torch.matmul(user_emb, self.model.item_embedding.weight.transpose(0, 1))
        return self.model.loss_fct(logits, target_items)

    def regularization(self, interests):
        return None
