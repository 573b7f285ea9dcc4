"""Local and global session views of RecBole's session backbones, for LLM4SBR.

LLM4SBR aligns the LLM's short-term intent with a backbone's *local* view of a session and the
long-term intent with its *global* view. The paper defines them for SR-GNN only (the last item's
node and the soft-attention pooling); for the others we take each model's own two
representations where it has them, and add SR-GNN's soft-attention pooling where it has one:

==========  ==============================================  ================================
backbone    local view                                      global view
==========  ==============================================  ================================
SRGNN       last item's node after the GNN (``h_t``)        soft-attention pooling (``a``)
GCSAN       last item's node after the GNN (``h_t``)        self-attention output at the
                                                            last position (``a_t``)
NARM        NARM's local encoder: attention over the GRU    NARM's global encoder: the last
            states (its paper's naming, ``c_local``)        GRU state (``c_global``)
STAMP       ``h_t`` from the last click ``m_t``             ``h_s`` from the attended
                                                            session memory (``m_a``, ``m_s``)
GRU4Rec     the last position's output                      soft-attention pooling (added)
SASRec      the last position's output                      soft-attention pooling (added)
TAGNN       last item's node after the GNN (``s_l``)        soft-attention pooling (``s_g``)
GCEGNN      last item's representation (session + global)   position-aware readout
DHCN        last item's hypergraph-convolved embedding      hypergraph channel's session
                                                            embedding
==========  ==============================================  ================================

Every view is computed from the backbone's own layers, so they keep training. Positions past a
sequence's length are zeroed first, so padding never influences a view. A backbone of our own
adds itself by defining ``session_views(item_seq, item_seq_len)`` (and optionally
``session_vector(local, global_)``; ``extra_loss(interaction)`` for a loss term of its own on a
training batch, as DHCN's self-supervised loss; ``candidate_scores(item_seq, item_seq_len,
items=None)`` for a score term per candidate item that no session vector carries, as TAGNN's
target-aware attention): adding one is one file. TAGNN, GCEGNN and DHCN do so.

**Soft-attention pooling** (SR-GNN's global view and the one added to GRU4Rec and SASRec) takes a
softmax over the real positions before the weighted sum (``global_pool: softmax``), as the
official LLM4SBR code does; RecBole's SRGNN sums the raw sigmoid scores (``global_pool: sum``),
which makes the global view's norm grow with the session's length.

**The backbone's own combination** (:meth:`SessionViews.combine`) turns (local, global) back into
the session vector the backbone itself scores with: ``linear_transform([a; h_t])`` for SR-GNN,
``w a_t + (1 - w) h_t`` for GC-SAN, ``B [c_local; c_global]`` for NARM, ``h_s * h_t`` for STAMP, the
last position for GRU4Rec and SASRec. LLM4SBR gates the views and then combines them this way,
so with gates of 1 it scores exactly as its backbone (up to the pooling above).
"""

import torch
import torch.nn as nn

from recbole_llm.model.layers import config_choice, masked_softmax

POOLS = ("softmax", "sum")


def pool_states(alpha, states, mask, pool):
    """Weighted sum of ``states`` ``[B, L, d]`` over real positions with scores ``alpha``
    ``[B, L, 1]``: normalised by a softmax over those positions (``softmax``), or raw (``sum``)."""
    if pool == "softmax":
        alpha = masked_softmax(alpha, mask.unsqueeze(-1), dim=1)
    return (alpha * states * mask.unsqueeze(-1)).sum(dim=1)


class SoftAttentionPool(nn.Module):
    """SR-GNN's soft attention, ``sum_i alpha_i h_i`` with ``alpha_i = q^T sigmoid(W1 h_last +
    W2 h_i)`` over real positions (softmax-normalised unless ``pool`` is ``sum``)."""

    def __init__(self, hidden_size, pool="softmax"):
        super().__init__()
        self.last = nn.Linear(hidden_size, hidden_size)
        self.each = nn.Linear(hidden_size, hidden_size, bias=False)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.pool = pool

    def forward(self, states, last, mask):
        alpha = self.score(torch.sigmoid(self.last(last).unsqueeze(1) + self.each(states)))
        return pool_states(alpha, states, mask, self.pool)


def _mask(item_seq, item_seq_len):
    positions = torch.arange(item_seq.size(1), device=item_seq.device)
    return positions.unsqueeze(0) < item_seq_len.unsqueeze(1)


def _graph_states(model, item_seq, item_seq_len, hidden_size):
    """SR-GNN/GC-SAN: node states gathered back to sequence positions, and the last one."""
    slices = model._get_slice(item_seq)
    alias_inputs, adjacency, items = slices[0], slices[1], slices[2]
    hidden = model.gnn(adjacency, model.item_embedding(items))
    index = alias_inputs.view(-1, alias_inputs.size(1), 1).expand(-1, -1, hidden_size)
    states = torch.gather(hidden, dim=1, index=index)
    return states, model.gather_indexes(states, item_seq_len - 1)


def srgnn_views(model, item_seq, item_seq_len, mask, pool):
    states, last = _graph_states(model, item_seq, item_seq_len, model.embedding_size)
    q1 = model.linear_one(last).unsqueeze(1)
    alpha = model.linear_three(torch.sigmoid(q1 + model.linear_two(states)))
    return last, pool_states(alpha, states, mask, pool)


def gcsan_views(model, item_seq, item_seq_len, mask, pool):
    states, last = _graph_states(model, item_seq, item_seq_len, model.hidden_size)
    outputs = model.self_attention(
        states, model.get_attention_mask(item_seq), output_all_encoded_layers=True
    )
    return last, model.gather_indexes(outputs[-1], item_seq_len - 1)


def narm_views(model, item_seq, item_seq_len, mask, pool):
    gru_out, _ = model.gru(model.emb_dropout(model.item_embedding(item_seq)))
    c_global = model.gather_indexes(gru_out, item_seq_len - 1)
    q1, q2 = model.a_1(gru_out), model.a_2(c_global).unsqueeze(1)
    alpha = model.v_t(mask.unsqueeze(-1) * torch.sigmoid(q1 + q2))
    c_local = (alpha * gru_out).sum(dim=1)
    return c_local, c_global


def stamp_views(model, item_seq, item_seq_len, mask, pool):
    memory = model.item_embedding(item_seq)
    last = model.gather_indexes(memory, item_seq_len - 1)
    mean = memory.sum(dim=1) / item_seq_len.unsqueeze(1).float()
    alpha = model.count_alpha(memory, last, mean)
    attended = torch.matmul(alpha.unsqueeze(1), memory).squeeze(1) + mean
    return model.tanh(model.mlp_b(last)), model.tanh(model.mlp_a(attended))


def gru4rec_states(model, item_seq, item_seq_len):
    gru_output, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))
    return model.dense(gru_output)


def sasrec_states(model, item_seq, item_seq_len):
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
    embedded = model.item_embedding(item_seq) + model.position_embedding(positions)
    embedded = model.dropout(model.LayerNorm(embedded))
    outputs = model.trm_encoder(
        embedded, model.get_attention_mask(item_seq), output_all_encoded_layers=True
    )
    return outputs[-1]


#: backbones whose two views come from their own layers
VIEW_FUNCTIONS = {
    "SRGNN": srgnn_views,
    "GCSAN": gcsan_views,
    "NARM": narm_views,
    "STAMP": stamp_views,
}
#: backbones with one output per position: last position, plus an added attention pooling
STATE_FUNCTIONS = {"GRU4Rec": gru4rec_states, "SASRec": sasrec_states}

#: each backbone's own session vector from its (local, global) views, as its forward builds it
COMBINE_FUNCTIONS = {
    "SRGNN": lambda model, local, global_: model.linear_transform(torch.cat([global_, local], 1)),
    "GCSAN": lambda model, local, global_: model.weight * global_ + (1 - model.weight) * local,
    "NARM": lambda model, local, global_: model.b(model.ct_dropout(torch.cat([local, global_], 1))),
    "STAMP": lambda model, local, global_: global_ * local,
    "GRU4Rec": lambda model, local, global_: local,
    "SASRec": lambda model, local, global_: local,
}


class SessionViews(nn.Module):
    """``(local, global)`` views ``[B, d]`` of a backbone (which stays owned by the caller)."""

    def __init__(self, backbone, hidden_size, pool="softmax"):
        super().__init__()
        config_choice("global_pool", pool, POOLS)
        self.name = type(backbone).__name__
        self.pool = None
        self.pooling = pool
        if hasattr(backbone, "session_views"):
            self.kind = "own"
        elif self.name in VIEW_FUNCTIONS:
            self.kind = "views"
        elif self.name in STATE_FUNCTIONS:
            self.kind = "states"
            self.pool = SoftAttentionPool(hidden_size, pool)
        else:
            known = sorted(VIEW_FUNCTIONS) + sorted(STATE_FUNCTIONS)
            raise ValueError(
                f"LLM4SBR has no local/global views for backbone '{self.name}'. Known: {known}; "
                "a new backbone defines session_views(item_seq, item_seq_len)."
            )

    def forward(self, backbone, item_seq, item_seq_len):
        mask = _mask(item_seq, item_seq_len)
        item_seq = item_seq.masked_fill(~mask, 0)  # padding never influences a view
        if self.kind == "own":
            return backbone.session_views(item_seq, item_seq_len)
        if self.kind == "views":
            return VIEW_FUNCTIONS[self.name](backbone, item_seq, item_seq_len, mask, self.pooling)
        states = STATE_FUNCTIONS[self.name](backbone, item_seq, item_seq_len)
        last = backbone.gather_indexes(states, item_seq_len - 1)
        return last, self.pool(states, last, mask)

    def combine(self, backbone, local, global_):
        """The backbone's own session vector ``[B, d_item]`` from (possibly gated) views."""
        if self.kind == "own":
            if not hasattr(backbone, "session_vector"):
                raise ValueError(
                    f"backbone '{self.name}' defines session_views but not "
                    "session_vector(local, global_), which LLM4SBR's residual fusion needs; "
                    "define it or use fusion: paper"
                )
            return backbone.session_vector(local, global_)
        return COMBINE_FUNCTIONS[self.name](backbone, local, global_)


def backbone_regularization(backbone, interaction):
    """The backbone's own extra loss term for a training batch, as its calculate_loss adds it
    (GC-SAN's embedding regulariser; ``extra_loss(interaction)`` of a backbone that defines it,
    such as DHCN's self-supervised loss); None for the others."""
    if type(backbone).__name__ == "GCSAN" and backbone.reg_weight:
        return backbone.reg_weight * backbone.reg_loss(backbone.item_embedding.weight)
    if hasattr(backbone, "extra_loss"):
        return backbone.extra_loss(interaction)
    return None


def candidate_scores(backbone, item_seq, item_seq_len, items=None):
    """A backbone's scores that no single session vector carries (TAGNN's target-aware term
    ``s_t,i^T v_i``), from its ``candidate_scores`` hook: ``[B, N]``, or ``[B]`` for ``items``;
    None for backbones without one. Padding is zeroed first, as for the views."""
    hook = getattr(backbone, "candidate_scores", None)
    if hook is None:
        return None
    item_seq = item_seq.masked_fill(~_mask(item_seq, item_seq_len), 0)
    return hook(item_seq, item_seq_len) if items is None else hook(item_seq, item_seq_len, items)
