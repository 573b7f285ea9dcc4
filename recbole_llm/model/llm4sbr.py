r"""
LLM4SBR
################################################

Reference:
    Shutong Qiao, Wei Zhou, Junhao Wen, Chen Gao, Qun Luo, Peixuan Chen, Yong Li. "Multi-view
    Intent Learning and Alignment with Large Language Models for Session-based
    Recommendation." ACM TOIS, 2025 (arXiv 2402.13840: "LLM4SBR: A Lightweight and Effective
    Framework for Integrating Large Language Models in Session-based Recommendation").

Reference code:
    https://github.com/tsinghua-fib-lab/LLM4SBR
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.data.dataset import intent_field
from recbole_llm.model.session_views import SessionViews, backbone_regularization
from recbole_llm.registry import get_model


def alignment(x, y):
    """DirectAU alignment of L2-normalised pairs: mean squared distance."""
    return (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(dim=1).mean()


def uniformity(x):
    """DirectAU uniformity of L2-normalised vectors: log mean exp(-2 * squared distance)."""
    x = F.normalize(x, dim=-1)
    if len(x) < 2:
        return x.new_zeros(())
    return torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log()


class LLM4SBR(SequentialRecommender):
    r"""LLM4SBR: a session backbone's local and global views, enhanced by the long- and
    short-term intents an LLM inferred for each session.

    Each intent (a text vector, localised onto real items by the semantic step) is projected by
    one shared linear map ``T``. The long-term intent is aligned with the global view and the
    short-term one with the local view (DirectAU: alignment plus uniformity, L2-normalised), and
    each gates its view: ``alpha = q^T sigmoid(view + T intent)``. The session vector is
    ``W [local * alpha_short ; global * alpha_long]``, scored against the item embeddings.
    Loss: cross-entropy + ``intent_loss_weight`` * (alignment + uniformity). The intents are
    inputs at inference too.

    Ablations: ``alignment: False`` (no AU loss); intents made with ``intent_views: [normal]``
    (one view: the backbone's own session vector, gated by one overall intent); the semantic
    step's ``intent_topr``.
    """

    input_type = InputType.POINTWISE
    semantics = "llm4sbr"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.intent_loss_weight = config["intent_loss_weight"]  # tau
        self.use_alignment = config["alignment"]  # AU loss on or off (ablation)
        self.view_loss_reduction = config["view_loss_reduction"]  # sum (code) or mean (paper)
        if self.view_loss_reduction not in ("sum", "mean"):
            raise ValueError(
                f"view_loss_reduction must be 'sum' or 'mean', got '{self.view_loss_reduction}'"
            )
        self.views = list(dataset.intent_views)
        if sorted(self.views) not in (["long", "short"], ["normal"]):
            raise ValueError(
                f"LLM4SBR needs intents for [long, short] or [normal], got {self.views}"
            )

        backbone_name = config["backbone"]
        if backbone_name == "LLM4SBR":
            raise ValueError("LLM4SBR cannot be its own backbone")
        self.backbone = get_model(backbone_name)(config, dataset)
        item_size = self.backbone.item_embedding.embedding_dim
        if self.views == ["normal"]:
            self.session_views = None
            view_size = item_size
        else:
            view_size = getattr(self.backbone, "session_view_size", None) or (
                self.backbone.hidden_size if backbone_name == "NARM" else item_size
            )
            self.session_views = SessionViews(self.backbone, view_size)
        self.intent_projection = nn.Linear(dataset.intent_dim, view_size)  # shared T
        self.gates = nn.ModuleDict({v: nn.Linear(view_size, 1, bias=False) for v in self.views})
        self.fusion = nn.Linear(view_size * len(self.views), item_size)
        for module in [self.intent_projection, self.fusion, *self.gates.values()]:
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.session_views is not None and self.session_views.pool is not None:
            self.session_views.pool.apply(_xavier)

    def _views(self, item_seq, item_seq_len):
        """``{view name: [B, d]}``: local for short, global for long, or the backbone's own."""
        if self.session_views is None:
            return {"normal": self.backbone.forward(item_seq, item_seq_len)}
        local, global_ = self.session_views(self.backbone, item_seq, item_seq_len)
        return {"short": local, "long": global_}

    def _encode(self, interaction):
        views = self._views(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        intents = {v: self.intent_projection(interaction[intent_field(v)]) for v in self.views}
        return views, intents

    def _fuse(self, views, intents):
        # the paper's order: local (short) before global (long)
        order = ["short", "long"] if len(self.views) == 2 else ["normal"]
        gated = [views[v] * self.gates[v](torch.sigmoid(views[v] + intents[v])) for v in order]
        return self.fusion(torch.cat(gated, dim=1))

    def forward(self, interaction):
        """The session vectors ``[B, d]`` (needs the interaction's intents)."""
        return self._fuse(*self._encode(interaction))

    def alignment_uniformity(self, views, intents):
        """DirectAU between each view and its intent, summed or averaged over views."""
        losses = [
            alignment(views[v], intents[v]) + (uniformity(views[v]) + uniformity(intents[v])) / 2
            for v in self.views
        ]
        total = sum(losses)
        return total / len(losses) if self.view_loss_reduction == "mean" else total

    def calculate_loss(self, interaction):
        views, intents = self._encode(interaction)
        logits = self._fuse(views, intents) @ self.backbone.item_embedding.weight.T
        logits[:, 0] = float("-inf")  # the padding id is never a class
        losses = [F.cross_entropy(logits, interaction[self.POS_ITEM_ID])]
        if self.use_alignment and self.intent_loss_weight:
            losses.append(self.intent_loss_weight * self.alignment_uniformity(views, intents))
        regularization = backbone_regularization(self.backbone)
        if regularization is not None:
            losses.append(regularization)
        return losses[0] if len(losses) == 1 else tuple(losses)

    def predict(self, interaction):
        session = self.forward(interaction)
        return (session * self.backbone.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        return self.forward(interaction) @ self.backbone.item_embedding.weight.T


def _xavier(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
