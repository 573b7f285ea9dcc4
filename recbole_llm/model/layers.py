"""Shared blocks: multi-interest extractors, target-aware readout, sampled softmax.

Tensor names: ``B`` batch, ``L`` max sequence length, ``K`` interests, ``d`` hidden size.
Every extractor takes item embeddings ``[B, L, d]`` and a boolean mask ``[B, L]`` (True at real
positions; sequences are left-aligned and right-padded, as RecBole builds them) and returns
interests ``[B, K, d]``; padded positions never influence the result, and sequences of length 0
or 1 give finite interests.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_llm.errors import UserError


def config_choice(key, value, allowed):
    """``value`` of config key ``key`` if it is one of ``allowed``; else an error naming both."""
    if value not in allowed:
        raise UserError(f"{key} must be one of {', '.join(allowed)}, got '{value}'")
    return value


def masked_softmax(logits, mask, dim):
    """Softmax that gives exactly zero weight where ``mask`` is False (no NaN if all are)."""
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


def real_item_std_mean(scores):
    """``(std, mean, scores - mean)`` of each row of ``[B, N]`` item scores over the real items
    (column 0, the padding id, left out of the statistics, not of the centred scores); the
    unbiased ``std`` as ``torch.std``. Two passes as sums, several times faster on a CPU than
    ``torch.std_mean`` over a row slice, and equal to float rounding."""
    n = scores.shape[1] - 1
    mean = scores[:, 1:].sum(dim=1, keepdim=True) / n
    centred = scores - mean
    squares = torch.linalg.vector_norm(centred[:, 1:], dim=1, keepdim=True).square()
    return (squares / (n - 1)).sqrt(), mean, centred


def squash(vectors, eps=1e-9):
    """Capsule squash: keep the direction, map the norm into [0, 1)."""
    norm_sq = (vectors * vectors).sum(dim=-1, keepdim=True)
    return norm_sq / (1.0 + norm_sq) / torch.sqrt(norm_sq + eps) * vectors


class SelfAttentiveExtractor(nn.Module):
    """ComiRec-SA's multi-head self-attentive extractor (also REMI's).

    ``A = softmax_L(W2 tanh(W1 (E + P)))`` per interest (``[B, K, L]``), interests ``A E``.
    The positional embedding enters the attention only, as in the reference code.
    """

    def __init__(self, hidden_size, interest_num, max_seq_length, add_position=True):
        super().__init__()
        # attention hidden width: four times the embedding size, as in ComiRec
        self.attention_hidden = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.attention_heads = nn.Linear(4 * hidden_size, interest_num, bias=False)
        self.position_embedding = (
            nn.Embedding(max_seq_length, hidden_size) if add_position else None
        )

    def forward(self, item_emb, mask):
        """Return interests ``[B, K, d]`` and the attention ``[B, K, L]``."""
        keys = item_emb
        if self.position_embedding is not None:
            positions = torch.arange(item_emb.size(1), device=item_emb.device)
            keys = keys + self.position_embedding(positions).unsqueeze(0)
        logits = self.attention_heads(torch.tanh(self.attention_hidden(keys))).transpose(1, 2)
        attention = masked_softmax(logits, mask.unsqueeze(1), dim=-1)
        return attention @ item_emb, attention


class CapsuleRoutingExtractor(nn.Module):
    """Dynamic routing from behaviour capsules to interest capsules (ComiRec-DR, MIND).

    - ``bilinear="per_position"`` (ComiRec-DR): one ``d x d`` map per position and interest.
      ``bilinear="shared"`` (MIND's B2I routing): one map ``S`` shared by all.
    - Routing logits start at zero (ComiRec-DR) or from a fixed N(0, 1) draw kept as a buffer
      (MIND; the reference code redraws them on every call, which makes inference random).
    - Coupling coefficients are a softmax over interests for each behaviour, as in the papers
      and the official TensorFlow ComiRec (the PyTorch ports normalise over positions).
    - Intermediate iterations route a detached copy of the mapped behaviours, so gradients
      reach the parameters through the last iteration only (as in the reference code).
    """

    def __init__(
        self,
        hidden_size,
        interest_num,
        max_seq_length,
        bilinear="per_position",
        routing_times=3,
        random_logits=False,
        relu_layer=False,
    ):
        super().__init__()
        if bilinear not in ("per_position", "shared"):
            raise ValueError(f"bilinear must be 'per_position' or 'shared', got '{bilinear}'")
        self.hidden_size = hidden_size
        self.interest_num = interest_num
        self.routing_times = routing_times
        self.bilinear = bilinear
        if bilinear == "per_position":
            self.weight = nn.Parameter(
                torch.empty(max_seq_length, interest_num, hidden_size, hidden_size)
            )
        else:
            self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))
        if random_logits:
            self.register_buffer("initial_logits", torch.randn(interest_num, max_seq_length))
        else:
            self.register_buffer("initial_logits", torch.zeros(interest_num, max_seq_length))
        self.relu = (
            nn.Sequential(nn.Linear(hidden_size, hidden_size, bias=False), nn.ReLU())
            if relu_layer
            else None
        )
        self.reset_parameters()

    def reset_parameters(self):
        # fan-in of each d x d map (init on the 4-D tensor would use L*K*d*d and vanish)
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / self.hidden_size))

    def map_behaviours(self, item_emb):
        """Behaviour capsules mapped towards each interest: ``[B, K, L, d]``."""
        if self.bilinear == "per_position":
            length = item_emb.size(1)
            return torch.einsum("bli,lkoi->bklo", item_emb, self.weight[:length])
        mapped = item_emb @ self.weight.T
        return mapped.unsqueeze(1).expand(-1, self.interest_num, -1, -1)

    def forward(self, item_emb, mask, interest_mask=None):
        """Return interests ``[B, K, d]`` and the coupling coefficients ``[B, K, L]``.

        ``interest_mask`` ``[B, K]`` (True = active) removes interests from the routing
        (MIND's dynamic interest number).
        """
        batch, length = mask.shape
        mapped = self.map_behaviours(item_emb)
        mapped_detached = mapped.detach()
        logits = self.initial_logits[:, :length].unsqueeze(0).expand(batch, -1, -1)
        route_mask = mask.unsqueeze(1).expand(-1, self.interest_num, -1)
        if interest_mask is not None:
            route_mask = route_mask & interest_mask.unsqueeze(-1)
        for iteration in range(self.routing_times):
            coupling = masked_softmax(logits, route_mask, dim=1)
            last = iteration == self.routing_times - 1
            behaviours = mapped if last else mapped_detached
            interests = squash((coupling.unsqueeze(-1) * behaviours).sum(dim=2))
            if not last:
                logits = logits + (mapped_detached @ interests.unsqueeze(-1)).squeeze(-1)
        if self.relu is not None:
            interests = self.relu(interests)
        return interests, coupling


def target_aware_readout(interests, target_emb, interest_mask=None, hard=True, power=1.0):
    """Read one vector out of the interests for a target item (training only).

    ``hard``: the interest with the largest inner product with the target (ComiRec, REMI).
    Otherwise label-aware attention (MIND): ``softmax_K(pow(V e, p)) V``, with the power applied
    to the magnitude so that negative scores keep their order.
    """
    scores = (interests @ target_emb.unsqueeze(-1)).squeeze(-1)
    if interest_mask is None:
        interest_mask = torch.ones_like(scores, dtype=torch.bool)
    if hard:
        best = scores.masked_fill(~interest_mask, torch.finfo(scores.dtype).min).argmax(dim=1)
        return interests[torch.arange(interests.size(0), device=interests.device), best]
    powered = torch.sign(scores) * scores.abs().pow(power)
    weights = masked_softmax(powered, interest_mask, dim=1)
    return (weights.unsqueeze(-1) * interests).sum(dim=1)


def sampled_softmax_loss(user_emb, item_table, pos_items, sample_num, beta=0.0, generator=None):
    """Softmax over the target and ``sample_num`` shared uniform negatives.

    Negatives are drawn once per batch from items ``1..N-1`` (never the padding id), with
    replacement; a negative equal to a row's target is masked out for that row. With
    ``beta > 0`` the negatives are re-weighted by ``softmax(beta * score)`` (REMI's
    interest-aware hard negative mining): the partition estimate becomes
    ``M * sum_j softmax(beta s)_j exp(s_j)``, which is the plain sampled softmax at ``beta = 0``.
    """
    n_items = item_table.size(0)
    negatives = torch.randint(
        1, n_items, (sample_num,), device=user_emb.device, generator=generator
    )
    pos_scores = (user_emb * item_table[pos_items]).sum(-1, keepdim=True)
    neg_scores = user_emb @ item_table[negatives].T
    valid = negatives.unsqueeze(0) != pos_items.unsqueeze(1)
    neg_scores = neg_scores.masked_fill(~valid, float("-inf"))
    if beta > 0:
        importance = torch.softmax(beta * neg_scores, dim=1)
        # log(M * sum_j w_j exp(s_j)), computed stably
        neg_term = math.log(sample_num) + torch.logsumexp(
            neg_scores + torch.log(importance.clamp_min(1e-30)), dim=1, keepdim=True
        )
        logits = torch.cat([pos_scores, neg_term], dim=1)
    else:
        logits = torch.cat([pos_scores, neg_scores], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(pos_items))
