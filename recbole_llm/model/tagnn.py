r"""
TAGNN
################################################

Reference:
    Feng Yu, Yanqiao Zhu, Qiang Liu, Shu Wu, Liang Wang, Tieniu Tan. "TAGNN: Target Attentive
    Graph Neural Networks for Session-based Recommendation." SIGIR 2020 (short paper).

Reference code:
    https://github.com/CRIPAC-DIG/TAGNN
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.sequential_recommender.srgnn import GNN
from recbole.utils import InputType

from recbole_llm.model.layers import masked_softmax
from recbole_llm.model.session_graph import (
    gather_nodes,
    in_chunks,
    official_init,
    session_graph,
    srgnn_adjacency,
    trim,
)

#: most attention entries (sessions x positions x items) computed at once when ranking all items
SCORE_BLOCK = 1 << 24


class TAGNN(SequentialRecommender):
    r"""SR-GNN's gated session graph, read out once per candidate item.

    The node states ``h_j`` come from SR-GNN's gated graph network over the session graph. The
    target-independent part of the session vector is SR-GNN's ``s_h = W3 [s_g; s_l]`` (``s_l``
    the last node, ``s_g`` the soft attention over the nodes). Each candidate ``v_i`` then reads
    the session with its own attention, ``s_t,i = sum_j beta_ij h_j`` with ``beta_ij =
    softmax_j(v_i^T W h_j)``, and scores ``(s_h + s_t,i)^T v_i`` (the official code's sum of the
    two parts). Ranking all items costs ``[B, L, N]`` per batch; it runs in blocks.

    LLM4SBR's views (``session_views``) are ``s_l`` (local) and ``s_g`` (global), and its session
    vector is ``s_h``; LLM4SBR scores its fused vector against the item table and adds the
    per-candidate term ``s_t,i^T v_i`` (:meth:`candidate_scores`), so LLM4SBR-TAGNN starts as
    TAGNN.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]  # item embedding and node state size
        self.step = config["step"]  # propagation steps of the gated graph network

        size = self.embedding_size
        self.item_embedding = nn.Embedding(self.n_items, size, padding_idx=0)
        self.gnn = GNN(size, self.step)  # RecBole's SR-GNN cell, the same gated update
        self.linear_one = nn.Linear(size, size)  # W1: the last node, in the soft attention
        self.linear_two = nn.Linear(size, size)  # W2: every node
        self.linear_three = nn.Linear(size, 1, bias=False)  # q
        self.linear_transform = nn.Linear(2 * size, size)  # W3: [s_g; s_l] -> s_h
        self.linear_target = nn.Linear(size, size, bias=False)  # W: target attention
        self._reset_parameters()

    def _reset_parameters(self):
        official_init(self, self.embedding_size, self.item_embedding)

    def _node_states(self, item_seq, item_seq_len):
        """Per-position node states ``[B, L', d]`` (``L'``: the longest sequence) and mask."""
        item_seq, mask = trim(item_seq, item_seq_len)
        alias, edges = session_graph(item_seq, mask)
        hidden = self.gnn(srgnn_adjacency(edges), self.item_embedding(item_seq))
        return gather_nodes(hidden, alias), mask

    def _views(self, states, mask, item_seq_len):
        last = self.gather_indexes(states, item_seq_len - 1)
        alpha = self.linear_three(
            torch.sigmoid(self.linear_one(last).unsqueeze(1) + self.linear_two(states))
        )
        alpha = masked_softmax(alpha, mask.unsqueeze(-1), dim=1)  # over real positions
        return last, (alpha * states).sum(dim=1)

    def session_views(self, item_seq, item_seq_len):
        """LLM4SBR's views ``[B, d]``: the last node ``s_l`` (local), the soft attention
        ``s_g`` (global)."""
        states, mask = self._node_states(item_seq, item_seq_len)
        return self._views(states, mask, item_seq_len)

    def session_vector(self, local, global_):
        """The target-independent session vector ``s_h = W3 [s_g; s_l]``."""
        return self.linear_transform(torch.cat([global_, local], dim=1))

    def forward(self, item_seq, item_seq_len):
        """The target-independent session vectors ``s_h`` ``[B, d]``."""
        return self.session_vector(*self.session_views(item_seq, item_seq_len))

    def _target_scores(self, states, mask, items=None):
        """The target-aware term ``s_t,i^T v_i``: ``[B, N]`` for every item, or ``[B]`` for
        one item per session (``items`` ``[B]``)."""
        if items is None:
            table = self.item_embedding.weight
            attention = self.linear_target(states) @ table.T  # [B, L', N]: v_i^T W h_j
            beta = masked_softmax(attention, mask.unsqueeze(-1), dim=1)
            return (beta * (states @ table.T)).sum(dim=1)
        item = self.item_embedding(items).unsqueeze(1)  # [B, 1, d]
        attention = (self.linear_target(states) * item).sum(dim=-1)  # [B, L']
        beta = masked_softmax(attention, mask, dim=1)
        return (beta * (states * item).sum(dim=-1)).sum(dim=1)

    def _block_rows(self, item_seq_len):
        """Sessions per block when ranking all items (``[B, L', N]`` entries per block)."""
        return max(1, SCORE_BLOCK // (max(int(item_seq_len.max()), 1) * self.n_items))

    def candidate_scores(self, item_seq, item_seq_len, items=None):
        """The per-candidate term ``s_t,i^T v_i`` alone: ``[B, N]`` for every item (in blocks),
        or ``[B]`` for ``items`` ``[B]``. A wrapper that scores one session vector against the
        item table (LLM4SBR) adds it to its scores."""

        def term(item_seq, item_seq_len, *chosen):
            states, mask = self._node_states(item_seq, item_seq_len)
            return self._target_scores(states, mask, *chosen)

        if items is not None:
            return term(item_seq, item_seq_len, items)
        return in_chunks(term, self._block_rows(item_seq_len), item_seq, item_seq_len)

    def _scores(self, item_seq, item_seq_len, items=None):
        states, mask = self._node_states(item_seq, item_seq_len)
        session = self.session_vector(*self._views(states, mask, item_seq_len))
        if items is None:
            return session @ self.item_embedding.weight.T + self._target_scores(states, mask)
        item_part = (session * self.item_embedding(items)).sum(dim=-1)
        return item_part + self._target_scores(states, mask, items)

    def calculate_loss(self, interaction):
        logits = self._scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        logits[:, 0] = float("-inf")  # the padding id is never a class
        return F.cross_entropy(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        return self._scores(item_seq, item_seq_len, interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        return in_chunks(self._scores, self._block_rows(item_seq_len), item_seq, item_seq_len)
