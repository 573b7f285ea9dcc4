r"""
DHCN
################################################

Reference:
    Xin Xia, Hongzhi Yin, Junliang Yu, Qinyong Wang, Lizhen Cui, Xiangliang Zhang.
    "Self-Supervised Hypergraph Convolutional Networks for Session-based Recommendation."
    AAAI 2021 (S^2-DHCN).

Reference code:
    https://github.com/xiaxin1998/DHCN
"""

from logging import getLogger

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.model.session_graph import (
    official_init,
    reversed_positions,
    training_rows,
    trim,
)


def hypergraph(items, lengths, continues, n_items):
    """The training sessions as a hypergraph: one hyperedge per session, holding its items.

    Returns the two sparse halves of DHCN's propagation ``X <- D^-1 H B^-1 H^T X``:
    ``to_edges`` = ``B^-1 H^T`` ``[M, N]`` (mean over a hyperedge's items) and ``to_items`` =
    ``D^-1 H`` ``[N, M]`` (mean over an item's hyperedges), and the item degrees ``[N]``.
    """
    session = torch.cumsum(~continues, dim=0) - 1  # rows that extend a row join its hyperedge
    positions = torch.arange(items.size(1)).unsqueeze(0)
    real = (positions < lengths.unsqueeze(1)) & (items > 0)
    rows = session.unsqueeze(1).expand_as(items)
    pairs = torch.unique(rows[real] * n_items + items[real])  # each item once per hyperedge
    edge, item = pairs // n_items, pairs % n_items
    n_edges = int(session[-1]) + 1 if len(session) else 0
    edge_size = torch.bincount(edge, minlength=n_edges).float()
    degree = torch.bincount(item, minlength=n_items).float()

    def sparse(rows, cols, values, shape):
        indices = torch.stack([rows, cols])
        return torch.sparse_coo_tensor(indices, values, shape, check_invariants=True).coalesce()

    to_edges = sparse(edge, item, 1.0 / edge_size[edge], (n_edges, n_items))
    to_items = sparse(item, edge, 1.0 / degree[item], (n_items, n_edges))
    return to_edges, to_items, degree


class HypergraphEmbedding(nn.Module):
    """Item embeddings after DHCN's hypergraph convolution, read like an ``nn.Embedding``.

    ``weight`` is the mean of the raw table and its ``layers`` propagations over the training
    hypergraph; ``embedding(ids)`` reads rows of it. DHCN scores against this table, so a
    wrapper that scores with its backbone's ``item_embedding.weight`` (LLM4SBR) does too. The
    raw table is ``raw``; the line-graph channel reads it.
    """

    def __init__(self, n_items, dim, to_edges, to_items, layers):
        super().__init__()
        self.raw = nn.Embedding(n_items, dim, padding_idx=0)
        self.num_embeddings, self.embedding_dim = n_items, dim
        self.layers = layers
        # rebuilt from the training split whenever the model is built, so never saved
        self.register_buffer("to_edges", to_edges, persistent=False)
        self.register_buffer("to_items", to_items, persistent=False)

    @property
    def weight(self):
        """The convolved table ``[N, d]``."""
        table = self.raw.weight
        total = table
        for _ in range(self.layers):
            table = torch.sparse.mm(self.to_items, torch.sparse.mm(self.to_edges, table))
            total = total + table
        return total / (self.layers + 1)

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class DHCN(SequentialRecommender):
    r"""S^2-DHCN: hypergraph convolution over the training sessions, a line-graph channel and a
    self-supervised loss between the two.

    Hypergraph channel: every training session is a hyperedge; item embeddings go through
    ``layers`` rounds of ``D^-1 H B^-1 H^T`` and are averaged over layers. A session is read out
    from its convolved items by a soft attention with reversed-position embeddings, and scored
    against the convolved items. Line-graph channel (training only): the batch's sessions are
    nodes, linked by ``|s_a & s_b| / |s_a | s_b|`` (plus self-loops); mean raw item embeddings
    go through ``layers`` rounds of ``D^-1 A``. The self-supervised loss tells each session's
    two embeddings apart from a row- and column-shuffled pair; it is added with weight
    ``ssl_weight`` (the paper's beta), summed over the batch as in the official code.

    LLM4SBR's views: the last item's convolved embedding (local) and the hypergraph channel's
    session embedding (global), which is the session vector itself; LLM4SBR adds the batch's
    self-supervised loss (:meth:`extra_loss`) to its own.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]  # item embedding size
        self.layers = config["conv_layers"]  # convolution layers of both channels
        self.ssl_weight = config["ssl_weight"]  # beta: weight of the self-supervised loss
        self.loss_names = ("rec", "ssl") if self.ssl_weight else ("rec",)

        rows = training_rows(dataset, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.ITEM_ID)
        to_edges, to_items, degree = hypergraph(*rows, self.n_items)
        getLogger().info(
            f"DHCN hypergraph: {to_edges.size(0)} hyperedges (training sessions) over "
            f"{int((degree > 0).sum())} of {self.n_items - 1} items"
        )
        size = self.embedding_size
        self.item_embedding = HypergraphEmbedding(
            self.n_items, size, to_edges, to_items, self.layers
        )
        self.position_embedding = nn.Embedding(self.max_seq_length, size)
        self.w_1 = nn.Linear(2 * size, size)  # [p_i; x_i] -> z_i
        self.w_2 = nn.Linear(size, 1, bias=False)  # q: beta_i
        self.glu1 = nn.Linear(size, size)
        self.glu2 = nn.Linear(size, size, bias=False)
        self._reset_parameters()

    def _reset_parameters(self):
        official_init(self, self.embedding_size, self.item_embedding.raw)

    def _hypergraph_session(self, table, item_seq, mask):
        """The hypergraph channel's session embeddings ``[B, d]`` and each position's
        convolved item ``[B, L, d]``."""
        floatmask = mask.unsqueeze(-1).float()
        states = F.embedding(item_seq, table) * floatmask
        mean = states.sum(dim=1) / floatmask.sum(dim=1)
        positions = self.position_embedding(reversed_positions(mask))
        z = torch.tanh(self.w_1(torch.cat([positions, states], dim=-1)))
        beta = self.w_2(torch.sigmoid(self.glu1(z) + self.glu2(mean).unsqueeze(1)))
        return (beta * floatmask * states).sum(dim=1), states

    def _line_graph_session(self, item_seq, mask):
        """The line-graph channel's session embeddings ``[B, d]`` for the batch's sessions."""
        members = torch.zeros(len(item_seq), self.n_items, device=item_seq.device)
        members.scatter_(1, item_seq, 1.0)
        members[:, 0] = 0.0
        overlap = members @ members.T
        sizes = members.sum(dim=1)
        union = (sizes.unsqueeze(1) + sizes.unsqueeze(0) - overlap).clamp(min=1)
        adjacency = overlap / union  # its diagonal is 1: the self-loops
        propagate = adjacency / adjacency.sum(dim=1, keepdim=True)  # D^-1 A
        floatmask = mask.unsqueeze(-1).float()
        session = (self.item_embedding.raw(item_seq) * floatmask).sum(1) / floatmask.sum(1)
        total = session
        for _ in range(self.layers):
            session = propagate @ session
            total = total + session
        return total / (self.layers + 1)

    def ssl_loss(self, hypergraph_session, item_seq, mask):
        """The self-supervised loss: each session's two channel embeddings against a row- and
        column-shuffled hypergraph embedding, summed over the batch."""
        line = self._line_graph_session(item_seq, mask)
        device = hypergraph_session.device
        rows = torch.randperm(len(line), device=device)
        columns = torch.randperm(line.size(1), device=device)
        corrupted = hypergraph_session[rows][:, columns]
        positive = (hypergraph_session * line).sum(dim=1)
        negative = (corrupted * line).sum(dim=1)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).sum()

    def _encode(self, item_seq, item_seq_len, table):
        item_seq, mask = trim(item_seq, item_seq_len)
        session, states = self._hypergraph_session(table, item_seq, mask)
        return session, states, item_seq, mask

    def session_views(self, item_seq, item_seq_len):
        """LLM4SBR's views ``[B, d]``: the last item's convolved embedding (local) and the
        hypergraph channel's session embedding (global)."""
        session, states, _, _ = self._encode(item_seq, item_seq_len, self.item_embedding.weight)
        return self.gather_indexes(states, item_seq_len - 1), session

    def extra_loss(self, interaction):
        """The weighted self-supervised loss of a training batch (None when ``ssl_weight`` is
        0): what a wrapper scoring with DHCN's views (LLM4SBR) adds to its loss."""
        if not self.ssl_weight:
            return None
        session, _, item_seq, mask = self._encode(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.item_embedding.weight
        )
        return self.ssl_weight * self.ssl_loss(session, item_seq, mask)

    def session_vector(self, local, global_):
        """DHCN scores with the hypergraph channel's session embedding alone."""
        return global_

    def forward(self, item_seq, item_seq_len):
        """The session embeddings ``[B, d]`` of the hypergraph channel."""
        return self._encode(item_seq, item_seq_len, self.item_embedding.weight)[0]

    def calculate_loss(self, interaction):
        table = self.item_embedding.weight
        session, _, item_seq, mask = self._encode(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table
        )
        logits = session @ table.T
        logits[:, 0] = float("-inf")  # the padding id is never a class
        loss = F.cross_entropy(logits, interaction[self.POS_ITEM_ID])
        if not self.ssl_weight:
            return loss
        return loss, self.ssl_weight * self.ssl_loss(session, item_seq, mask)

    def predict(self, interaction):
        table = self.item_embedding.weight
        session = self._encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return (session[0] * table[interaction[self.ITEM_ID]]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        table = self.item_embedding.weight
        session = self._encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return session[0] @ table.T
