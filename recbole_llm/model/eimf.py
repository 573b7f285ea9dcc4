r"""
EIMF
################################################

Reference:
    Shutong Qiao, Chen Gao, Yong Li, Hongzhi Yin. "LLM-assisted Explicit and Implicit
    Multi-interest Learning Framework for Sequential Recommendation." arXiv 2411.09410, 2024
    (v3, 2025: "LLM-based Bi-level Multi-interest Learning Framework for Sequential
    Recommendation").

Reference code:
    https://github.com/QEpiphany/EIMF
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.fields import INTEREST_ROW
from recbole_llm.model.abstract_recommender import (
    READOUTS,
    MultiInterestRecommender,
    SingleInterestAdapter,
)
from recbole_llm.model.layers import config_choice, masked_softmax, target_aware_readout
from recbole_llm.model.lookup import get_model


class SemanticInterestModule(nn.Module):
    r"""ESIM: a user's explicit (LLM) interests, read out for the target item.

    Text vectors enter through one learned projection per role: ``interest_projection`` for
    the interests, ``item_text_projection`` for items' texts. The projected interests attend to
    each other (single-head scaled dot-product self-attention, padding masked), then the target
    item's projected text reads one of them out (hard, or soft attention).
    """

    def __init__(
        self, item_text, interest_tables, hidden_size, hard_readout=True, freeze_item_text=True
    ):
        super().__init__()
        text_dim = item_text.size(1)
        # typical users' interests [T + 1, M, D] and mask [T + 1, M], as loaded (never saved)
        interests, mask = interest_tables
        self.register_buffer("interest_table", interests.clone(), persistent=False)
        self.register_buffer("interest_mask", mask.clone(), persistent=False)
        if freeze_item_text:
            # loaded once from the semantic files, never trained, never saved in checkpoints
            self.register_buffer("item_text", item_text.clone(), persistent=False)
        else:
            self.item_text = nn.Parameter(item_text.clone())
        self.interest_projection = nn.Linear(text_dim, hidden_size)
        self.item_text_projection = nn.Linear(text_dim, hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False)
        self.hard_readout = hard_readout
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def item_table(self):
        """Every item's projected text ``[n_items, d]``."""
        return self.item_text_projection(self.item_text)

    def forward(self, rows, target_items, item_table=None):
        """Readout ``[B, d]`` of the semantic interests of each row's typical user (``rows``
        ``[B]``, indices into ``interest_table``) for the targets, the targets' projected texts
        ``[B, d]`` (rows of ``item_table`` when the caller has projected every item's text
        already), and the interest mask ``[B, M]``.

        Each typical user in the batch is projected and self-attended once; its users share
        the result (a batch of 512 users has a few dozen typical users)."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        mask = self.interest_mask[unique]
        projected = self.interest_projection(self.interest_table[unique])
        query, key, value = self.query(projected), self.key(projected), self.value(projected)
        scores = query @ key.transpose(1, 2) / projected.size(-1) ** 0.5
        attention = masked_softmax(scores, mask.unsqueeze(1), dim=-1)
        attended = ((attention @ value) * mask.unsqueeze(-1))[inverse]
        mask = mask[inverse]
        if item_table is None:
            target_text = self.item_text_projection(self.item_text[target_items])
        else:
            target_text = item_table[target_items]
        readout = target_aware_readout(attended, target_text, mask, hard=self.hard_readout)
        return readout, target_text, mask


def info_nce(anchors, positives, temperature, keys=None):
    """In-batch InfoNCE on cosine similarities, one direction (as the official code).

    With ``keys`` ``[B]`` it is multi-positive: every column whose key equals the row's (the
    same typical user, the same target item) is a positive, ``-log(sum_pos exp / sum_all exp)``.
    The official form treats such duplicates as negatives: a batch of 512 users with 31-41
    distinct typical users then has a floor of about 4 nats. Where the duplicate columns are
    equal vectors (the same target's text, the same typical user with the same readout), that
    floor is a constant, log of the count, and both forms give the same gradients; they differ
    only where a key's columns differ (a typical user whose readout for another target picked
    another interest), which the multi-positive form still counts as positives.
    """
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature
    if keys is None:
        return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))
    same = keys.unsqueeze(1) == keys.unsqueeze(0)
    log_all = torch.logsumexp(logits, dim=1)
    log_positive = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    return (log_all - log_positive).mean()


def cosine_distance(a, b):
    return (1.0 - F.cosine_similarity(a, b, dim=-1)).mean()


SEMANTIC_TARGETS = ("text", "id")
SEMANTIC_CONTROLS = ("none", "target_text", "item_align_only")


class EIMF(SequentialRecommender):
    r"""EIMF: an implicit, behavioural multi-interest backbone (IBIM) trained together with
    explicit semantic interests that an LLM wrote for typical users (ESIM).

    Training adds to the backbone's own loss a semantic-prediction loss (the semantic readout
    must pick the target among all items' texts) and a modality-alignment loss (InfoNCE plus
    cosine terms between the behavioural and the semantic readout, and between the target's
    ID embedding and its text). Users without semantics are left out of both. Inference uses
    the backbone alone: no semantic input, no LLM.

    Where we differ from the official code, each reachable by config:

    - ``multi_positive: True``: in-batch InfoNCE counts every column of the same typical user
      (user term) or the same target item (item term) as a positive (:func:`info_nce`).
    - ``semantic_targets: id``: the semantic readout is scored against the backbone's item ID
      embeddings instead of the items' projected texts, so the semantic-prediction loss reaches
      the backbone (with ``text`` and frozen item texts its gradient there is exactly 0;
      ``freeze_item_text: False`` is the official code's indirect coupling, a trainable
      item-text table shared with the item alignment).

    Controls that can fail (``semantic_control``): ``target_text`` replaces the readout of the
    user's LLM interests by the target's own projected text (no user semantics at all);
    ``item_align_only`` keeps only the item alignment (ID embedding against its text). A gain
    counts for the LLM only where it beats both.
    """

    input_type = InputType.POINTWISE
    semantics = "eimf"
    #: allowed values of config keys, checked when the config is built (and here)
    config_choices = {
        "semantic_targets": SEMANTIC_TARGETS,
        "semantic_control": SEMANTIC_CONTROLS,
        "semantic_readout": READOUTS,
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.semantic_weight = config["semantic_weight"]  # semantic-prediction loss weight
        self.align_weight = config["align_weight"]  # modality-alignment loss weight
        self.temperature = config["align_temperature"]  # InfoNCE temperature
        self.align_mix = config["align_mix"]  # user InfoNCE, item InfoNCE, user cos, item cos
        if len(self.align_mix) != 4:
            raise ValueError(f"align_mix needs 4 weights, got {self.align_mix}")
        self.multi_positive = config["multi_positive"]  # duplicates are positives, not negatives
        self.semantic_targets = config_choice(
            "semantic_targets", config["semantic_targets"], SEMANTIC_TARGETS
        )  # classes of the semantic-prediction loss: item texts or the backbone's item ids
        self.semantic_control = config_choice(
            "semantic_control", config["semantic_control"], SEMANTIC_CONTROLS
        )  # LLM-free controls
        self.semantic_negatives = config["semantic_negatives"]  # 0: softmax over every item
        if not isinstance(self.semantic_negatives, int) or self.semantic_negatives < 0:
            raise ValueError(
                f"semantic_negatives must be an integer >= 0, got {self.semantic_negatives!r}"
            )
        # the sampled classes' own stream: the backbone's random draws stay those it makes alone
        self._negative_generator = torch.Generator().manual_seed(config["seed"] + 2)

        backbone_name = config["backbone"]
        if backbone_name == "EIMF":
            raise ValueError("EIMF cannot be its own backbone")
        self.backbone = get_model(backbone_name)(config, dataset)
        # the backbone seen as a multi-interest model: the backbone itself, or an adapter that
        # holds no weights of its own; kept out of the module registry so the model printout
        # and the state dict hold the backbone once
        object.__setattr__(
            self,
            "behaviour",
            (
                self.backbone
                if isinstance(self.backbone, MultiInterestRecommender)
                else SingleInterestAdapter(self.backbone)
            ),
        )

        self.semantic = None
        item_text = getattr(dataset, "item_text_matrix", lambda: None)()
        interest_tables = getattr(dataset, "interest_tables", lambda: None)()
        if item_text is not None and interest_tables is not None:
            # a separate random stream: the backbone sees exactly what it sees alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config["seed"] + 1)
                self.semantic = SemanticInterestModule(
                    item_text,
                    interest_tables,
                    config["hidden_size"],
                    hard_readout=config_choice(
                        "semantic_readout", config["semantic_readout"], READOUTS
                    )
                    == "hard",
                    freeze_item_text=config["freeze_item_text"],
                )
            self.logger.info(
                f"EIMF: backbone {backbone_name}; {dataset.users_without_semantics()} users "
                "without semantic interests train with the semantic losses masked out"
            )
        elif self.semantic_weight or self.align_weight:
            self.logger.info("EIMF built without semantics: usable for inference only")

    def load_state_dict(self, state_dict, strict=True):
        """Load a checkpoint; without semantics (inference) its ESIM weights are skipped.
        Checkpoints made before ``behaviour`` left the module registry hold the backbone's
        weights a second time under ``behaviour.``: those copies are dropped."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("behaviour.")}
        if self.semantic is None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("semantic.")}
        return super().load_state_dict(state_dict, strict=strict)

    def forward(self, item_seq, item_seq_len):
        """The backbone's interests ``[B, K, d]`` (behaviour only)."""
        return self.behaviour.encode(item_seq, item_seq_len).vectors

    def _semantic_losses(self, interaction, behaviour_readout, target_items):
        if self.semantic is None:
            raise RuntimeError(
                "EIMF needs its semantic files to train with semantic_weight or align_weight "
                "> 0; build the dataset with semantics (semantics_required: True)."
            )
        item_align_only = self.semantic_control == "item_align_only"
        semantic_weight = 0.0 if item_align_only else self.semantic_weight
        # every item's projected text, once per batch, only for a full softmax over texts
        full_text = self.semantic_targets == "text" and not self.semantic_negatives
        table = self.semantic.item_table() if semantic_weight and full_text else None
        rows = interaction[INTEREST_ROW]
        semantic_readout, target_text, mask = self.semantic(rows, target_items, item_table=table)
        valid = mask.any(dim=1)
        user_keys = rows
        if self.semantic_control == "target_text":
            semantic_readout, valid, user_keys = target_text, torch.ones_like(valid), target_items
        losses = []
        if semantic_weight:
            loss = behaviour_readout.new_zeros(())
            if valid.any():
                loss = self._semantic_prediction(
                    semantic_readout[valid], target_items[valid], target_text[valid], table
                )
            losses.append(semantic_weight * loss)
        if self.align_weight:
            user_nce = user_cos = behaviour_readout.new_zeros(())
            if valid.any() and not item_align_only:
                user_nce = info_nce(
                    behaviour_readout[valid],
                    semantic_readout[valid],
                    self.temperature,
                    keys=user_keys[valid] if self.multi_positive else None,
                )
                user_cos = cosine_distance(behaviour_readout[valid], semantic_readout[valid])
            id_emb = self.behaviour.item_embedding(target_items)
            item_keys = target_items if self.multi_positive else None
            item_nce = info_nce(id_emb, target_text, self.temperature, keys=item_keys)
            item_cos = cosine_distance(id_emb, target_text)
            mix = self.align_mix
            alignment = (
                mix[0] * user_nce + mix[1] * item_nce + mix[2] * user_cos + mix[3] * item_cos
            )
            losses.append(self.align_weight * alignment)
        return losses

    def _class_vectors(self, items):
        """The semantic-prediction classes of ``items``: their projected texts, or the
        backbone's embeddings of them (``semantic_targets: id``)."""
        if self.semantic_targets == "text":
            return self.semantic.item_text_projection(self.semantic.item_text[items])
        return self.behaviour.item_embedding(items)

    def _semantic_prediction(self, readout, targets, target_text, table):
        """Cross-entropy of each readout's target among every item (``semantic_negatives: 0``)
        or among its target and ``semantic_negatives`` items drawn uniformly for the batch (a
        draw equal to a row's target is masked in that row; with uniform draws the sampled
        softmax needs no correction)."""
        if not self.semantic_negatives:
            classes = table if table is not None else self.behaviour.item_embedding.weight
            logits = readout @ classes.T
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, targets)
        n_items = self.behaviour.item_embedding.num_embeddings
        sampled = torch.randint(
            1, n_items, (self.semantic_negatives,), generator=self._negative_generator
        ).to(targets.device)
        positive = target_text if self.semantic_targets == "text" else self._class_vectors(targets)
        positive_logit = (readout * positive).sum(-1, keepdim=True)
        negative_logits = readout @ self._class_vectors(sampled).T
        negative_logits = negative_logits.masked_fill(
            sampled.unsqueeze(0) == targets.unsqueeze(1), float("-inf")
        )
        logits = torch.cat([positive_logit, negative_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        target_items = interaction[self.POS_ITEM_ID]
        interests = self.behaviour.encode(item_seq, item_seq_len)
        readout = self.behaviour.readout(interests, target_items)
        losses, names = [self.behaviour.recommendation_loss(readout, target_items)], ["rec"]
        regularization = self.behaviour.regularization(interests)
        if regularization is not None:
            losses.append(regularization)
            names.append("reg")
        if self.semantic_weight or self.align_weight:
            losses += self._semantic_losses(interaction, readout, target_items)
            names += [
                n
                for n, on in (("semantic", self._semantic_on()), ("align", self.align_weight))
                if on
            ]
        self.loss_names = tuple(names)  # the trainer logs each term by name
        return losses[0] if len(losses) == 1 else tuple(losses)

    def _semantic_on(self):
        return self.semantic_weight and self.semantic_control != "item_align_only"

    def predict(self, interaction):
        return self.backbone.predict(interaction)

    def full_sort_predict(self, interaction):
        return self.backbone.full_sort_predict(interaction)
