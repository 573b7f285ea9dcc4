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

from recbole_llm.fields import intent_field, intent_items_field, intent_weights_field
from recbole_llm.model.layers import config_choice, real_item_std_mean
from recbole_llm.model.lookup import get_model
from recbole_llm.model.session_views import (
    POOLS,
    SessionViews,
    backbone_regularization,
    candidate_scores,
)


def alignment(x, y):
    """DirectAU alignment of L2-normalised pairs: mean squared distance."""
    return (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(dim=1).mean()


def uniformity(x):
    """DirectAU uniformity of L2-normalised vectors: log mean exp(-2 * squared distance)."""
    x = F.normalize(x, dim=-1)
    if len(x) < 2:
        return x.new_zeros(())
    return torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log()


FUSIONS = ("residual", "additive", "score", "paper")
CONTROLS = ("none", "mean", "shuffle")
CONTROL_PHASES = ("both", "train", "inference")
VIEW_LOSS_REDUCTIONS = ("sum", "mean")


#: The largest item-text Gram table (``[N, N]`` float32) fusion ``score`` keeps for compact
#: intents: 1 GiB, about 16,000 items; beyond it each batch takes the ``[B, D] x [D, N]`` product.
GRAM_MAX_BYTES = 1 << 30


class LLM4SBR(SequentialRecommender):
    r"""LLM4SBR: a session backbone's local and global views, enhanced by the long- and
    short-term intents an LLM inferred for each session.

    Each intent (a text vector, localised onto real items by the semantic step) is projected by
    one shared linear map ``T``. The long-term intent is aligned with the global view and the
    short-term one with the local view (DirectAU: alignment plus uniformity, L2-normalised).
    Loss: cross-entropy + ``intent_loss_weight`` * (alignment + uniformity). The intents are
    inputs at inference too.

    Four fusions (``fusion``):

    - ``paper``: each intent gates its view, ``alpha = q^T sigmoid(view + T intent)``, and the
      session vector is ``W [local * alpha_short ; global * alpha_long]`` (Eq. 10-12).
    - ``residual``: the same gates on one scale and centred on 1,
      ``alpha = 1 + q^T sigmoid(LN(view) + LN(T intent))``, the gated views combined as the
      backbone combines its own views, plus the paper's ``W [gated local ; gated global]`` and
      ``U [LN(T intent_short) ; LN(T intent_long)]``. ``q``, ``W`` and ``U`` start at zero, so the
      model starts as its backbone and the views' mix and the intents are learned in.
      Unnormalised, the projected intents (std 0.1) were drowned by views of std 1-3.5, and
      shuffling them changed almost no ranking.
    - ``additive``: no gates and no ``W``: the backbone's own session vector plus
      ``U [LN(T intent_short) ; LN(T intent_long)]``, ``U`` zero at the start. The intents can
      only add to what the backbone scores; nothing re-weights its views. (Trained with the
      residual fusion, the gates alone cost SASRec validation NDCG@50 with mean intents:
      ``benchmarks/probe_fusion.py``.)
    - ``score`` (default, chosen on validation over ``residual`` and ``additive``): the
      backbone's own session vector and scores, plus, per view, a learned weight ``w`` (zero at
      the start) times each candidate's text similarity to the intent in the text encoder's
      space (cosine, standardised over the items of each row), scaled by the spread (standard
      deviation, not back-propagated) of the backbone's own scores: ``w`` is the intent term's
      weight relative to the backbone. Two numbers learn how much to trust
      each intent; nothing maps a session's intent vector to item ids, so a per-session intent
      cannot be memorised as a session key (with ``additive`` on 4,886 training sessions the
      tenth epoch's training loss was a third below the backbone's, 186 against 282, and
      validation NDCG@50 peaked at 0.078 against 0.102, GRU4Rec seed 2020).

    Controls that can fail (``intent_control``, at ``intent_control_phase``): every session gets
    the mean intent of the dataset (``mean``), or another session's intents (``shuffle``, a
    permutation within each batch). A gain counts for the LLM only where it beats these.

    Scores are the session vector against the backbone's item table, plus the backbone's own
    per-candidate term where it has one (TAGNN's target-aware attention, its
    ``candidate_scores``), so every fusion but the paper's starts exactly as its backbone scores.

    Ablations: ``alignment: False`` (no AU loss); intents made with ``intent_views: [normal]``
    (one view: the backbone's own session vector, gated by one overall intent); the semantic
    step's ``intent_topr``.
    """

    input_type = InputType.POINTWISE
    # logged once, the first time the term shows in the training log
    LOSS_NOTES = {
        "align_uniformity": "alignment + uniformity (DirectAU); uniformity is the log of a mean "
        "of exp(-2 * squared distance) <= 1, so this term is negative by design and falls "
        "as the vectors spread out"
    }
    semantics = "llm4sbr"
    #: allowed values of config keys, checked when the config is built (and here)
    config_choices = {
        "view_loss_reduction": VIEW_LOSS_REDUCTIONS,
        "fusion": FUSIONS,
        "intent_control": CONTROLS,
        "intent_control_phase": CONTROL_PHASES,
        "global_pool": POOLS,
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.intent_loss_weight = config["intent_loss_weight"]  # tau
        self.use_alignment = config["alignment"]  # AU loss on or off (ablation)
        self.view_loss_reduction = config_choice(
            "view_loss_reduction", config["view_loss_reduction"], VIEW_LOSS_REDUCTIONS
        )  # sum (code) or mean (paper)
        self.fusion_kind = config_choice("fusion", config["fusion"], FUSIONS)
        self.intent_control = config_choice("intent_control", config["intent_control"], CONTROLS)
        self.control_phase = config_choice(
            "intent_control_phase", config["intent_control_phase"], CONTROL_PHASES
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
            self.session_views = SessionViews(self.backbone, view_size, config["global_pool"])
        self.intent_projection = nn.Linear(dataset.intent_dim, view_size)  # shared T
        for module in [self.intent_projection, *self._build_fusion(dataset, view_size, item_size)]:
            _xavier(module)
        if self.session_views is not None and self.session_views.pool is not None:
            self.session_views.pool.apply(_xavier)
        # the dataset's mean intent per view, for the constant-intent control
        mean_intents = getattr(dataset, "mean_intents", lambda: {})()
        for view in self.views:
            self.register_buffer(
                f"mean_{view}_intent",
                mean_intents.get(view, torch.zeros(dataset.intent_dim)),
                persistent=False,
            )
        self._shuffle_generator = torch.Generator().manual_seed(config["seed"])

    def _build_fusion(self, dataset, view_size, item_size):
        """Make the fusion's own modules, zeroing those that must start at zero (so LLM4SBR
        starts as its backbone); returns the ones to initialise like the paper's code."""
        width = view_size * len(self.views)
        if self.fusion_kind == "score":
            text = torch.as_tensor(dataset.item_text_matrix(), dtype=torch.float)
            self.register_buffer("item_text", F.normalize(text, dim=1), persistent=False)
            # compact intents are weighted sums of r item texts, so their dot products with
            # every item's unit text are weighted sums of r rows of this [N, N] table: an
            # embedding_bag instead of a [B, D] x [D, N] product (exact to float rounding)
            gram = None
            compact = getattr(dataset, "intent_form", "dense") == "compact"
            if compact and text.shape[0] ** 2 * 4 <= GRAM_MAX_BYTES:
                gram = text @ self.item_text.T
            self.register_buffer("text_gram", gram, persistent=False)
            self.intent_weight = nn.Parameter(torch.zeros(len(self.views)))
            return []
        if self.fusion_kind == "additive":
            self.intent_norm = nn.LayerNorm(view_size)
            self.intent_residual = nn.Linear(width, item_size, bias=False)
            nn.init.zeros_(self.intent_residual.weight)  # start as the backbone
            return []
        self.gates = nn.ModuleDict({v: nn.Linear(view_size, 1, bias=False) for v in self.views})
        if self.fusion_kind == "paper":
            self.fusion = nn.Linear(width, item_size)  # W
            return [self.fusion, *self.gates.values()]
        self.view_norm = nn.LayerNorm(view_size)
        self.intent_norm = nn.LayerNorm(view_size)
        # the paper's W [gated views] and U [intents], both added to the backbone's vector
        self.view_residual = nn.Linear(width, item_size, bias=False)
        self.intent_residual = nn.Linear(width, item_size, bias=False)
        for module in [self.view_residual, self.intent_residual, *self.gates.values()]:
            nn.init.zeros_(module.weight)  # start as the backbone
        return []

    def _views(self, item_seq, item_seq_len):
        """``{view name: [B, d]}``: local for short, global for long, or the backbone's own."""
        if self.session_views is None:
            return {"normal": self.backbone.forward(item_seq, item_seq_len)}
        local, global_ = self.session_views(self.backbone, item_seq, item_seq_len)
        return {"short": local, "long": global_}

    def _control_active(self):
        if self.intent_control == "none":
            return False
        phase = "train" if self.training else "inference"
        return self.control_phase in ("both", phase)

    def _raw_intents(self, interaction):
        """The batch's intent vectors per view, after the configured control, and for compact
        intents their ``(items, weights)`` per view (None where the batch has none, or under
        the mean control)."""
        intents = {v: interaction[intent_field(v)] for v in self.views}
        compact = None
        if all(intent_items_field(v) in interaction for v in self.views):
            compact = {
                v: (interaction[intent_items_field(v)], interaction[intent_weights_field(v)])
                for v in self.views
            }
        if not self._control_active():
            return intents, compact
        if self.intent_control == "mean":
            means = {v: getattr(self, f"mean_{v}_intent").expand_as(x) for v, x in intents.items()}
            return means, None
        # one permutation for all views: a session gets another session's intents, both views
        first = next(iter(intents.values()))
        order = torch.randperm(len(first), generator=self._shuffle_generator).to(first.device)
        if compact is not None:
            compact = {v: (items[order], weights[order]) for v, (items, weights) in compact.items()}
        return {v: x[order] for v, x in intents.items()}, compact

    def _encode(self, interaction):
        """``(views, projected intents, raw intents, compact intents or None)`` of a batch
        (one control draw for all)."""
        views = self._views(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        raw, compact = self._raw_intents(interaction)
        intents = {v: self.intent_projection(raw[v]) for v in self.views}
        return views, intents, raw, compact

    def _order(self):
        # the paper's order: local (short) before global (long)
        return ["short", "long"] if len(self.views) == 2 else ["normal"]

    def _fuse(self, views, intents):
        order = self._order()
        if self.fusion_kind == "score":
            return self._combine(views)
        if self.fusion_kind == "paper":
            gated = [views[v] * self.gates[v](torch.sigmoid(views[v] + intents[v])) for v in order]
            return self.fusion(torch.cat(gated, dim=1))
        normed = {v: self.intent_norm(intents[v]) for v in order}
        added = self.intent_residual(torch.cat([normed[v] for v in order], 1))
        if self.fusion_kind == "additive":
            return self._combine(views) + added
        gated = {
            v: views[v] * (1 + self.gates[v](torch.sigmoid(self.view_norm(views[v]) + normed[v])))
            for v in order
        }
        views_part = self.view_residual(torch.cat([gated[v] for v in order], dim=1))
        return self._combine(gated) + views_part + added

    def _combine(self, views):
        """The backbone's own session vector from (possibly gated) views."""
        if self.session_views is None:
            return views["normal"]
        return self.session_views.combine(self.backbone, views["short"], views["long"])

    def forward(self, interaction):
        """The session vectors ``[B, d]`` (needs the interaction's intents)."""
        views, intents, _, _ = self._encode(interaction)
        return self._fuse(views, intents)

    def alignment_uniformity(self, views, intents):
        """DirectAU between each view and its intent, summed or averaged over views."""
        losses = [
            alignment(views[v], intents[v]) + (uniformity(views[v]) + uniformity(intents[v])) / 2
            for v in self.views
        ]
        total = sum(losses)
        return total / len(losses) if self.view_loss_reduction == "mean" else total

    def _candidate_scores(self, interaction, items=None):
        """The backbone's per-candidate term (TAGNN's target-aware attention), or None."""
        return candidate_scores(
            self.backbone, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], items
        )

    def _all_scores(self, interaction):
        """``[B, N]``: the session vectors against the item table, plus the backbone's
        per-candidate term where it has one (and the intents' text term, fusion ``score``),
        and the batch's views and projected intents."""
        views, intents, raw, compact = self._encode(interaction)
        scores = self._fuse(views, intents) @ self.backbone.item_embedding.weight.T
        extra = self._candidate_scores(interaction)
        scores = scores if extra is None else scores + extra
        if self.fusion_kind == "score":
            scores = self._add_intent_scores(raw, scores, compact)
        return scores, views, intents

    def _intent_cosines(self, raw, compact, view):
        """``[B, N]``: each candidate's text cosine to the view's intent; for compact intents
        from the Gram table (their norm from the rebuilt vector), else a product."""
        if compact is None or self.text_gram is None:
            return F.normalize(raw[view], dim=1) @ self.item_text.T
        items, weights = compact[view]
        dots = F.embedding_bag(items, self.text_gram, per_sample_weights=weights, mode="sum")
        return dots / raw[view].norm(dim=1, keepdim=True).clamp_min(1e-12)  # as F.normalize

    def _add_intent_scores(self, raw, scores, compact=None):
        """``scores`` ``[B, N]`` plus, for each view, ``w_v`` * the candidates' standardised
        text cosine to the view's ``raw`` intent * the spread of the backbone's ``scores``
        (means and deviations over the real items, padding left out), as
        ``(cos - mean) * w_v * spread / std`` row by row: one pass over ``[B, N]`` a view
        besides the cosines and their statistics."""
        with torch.no_grad():
            spread = real_item_std_mean(scores)[0]
        for v, view in enumerate(self.views):
            # intents and item texts are data: the cosines and their statistics need no
            # gradient, which reaches w_v through the per-row scale alone
            with torch.no_grad():
                sigma, _, centred = real_item_std_mean(self._intent_cosines(raw, compact, view))
            scores = torch.addcmul(scores, centred, self.intent_weight[v] * spread / (sigma + 1e-6))
        return scores

    def calculate_loss(self, interaction):
        logits, views, intents = self._all_scores(interaction)
        logits[:, 0] = float("-inf")  # the padding id is never a class
        losses, names = [F.cross_entropy(logits, interaction[self.POS_ITEM_ID])], ["rec"]
        if self.use_alignment and self.intent_loss_weight:
            losses.append(self.intent_loss_weight * self.alignment_uniformity(views, intents))
            names.append("align_uniformity")
        regularization = backbone_regularization(self.backbone, interaction)
        if regularization is not None:
            losses.append(regularization)
            names.append("reg")
        self.loss_names = tuple(names)  # the trainer logs each term by name
        return losses[0] if len(losses) == 1 else tuple(losses)

    def predict(self, interaction):
        if self.fusion_kind == "score":  # standardised over every item: score them all
            scores = self.full_sort_predict(interaction)
            return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
        session = self.forward(interaction)
        items = interaction[self.ITEM_ID]
        scores = (session * self.backbone.item_embedding(items)).sum(dim=-1)
        extra = self._candidate_scores(interaction, items)
        return scores if extra is None else scores + extra

    def full_sort_predict(self, interaction):
        return self._all_scores(interaction)[0]


def _xavier(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
