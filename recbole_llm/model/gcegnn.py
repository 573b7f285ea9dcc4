r"""
GCEGNN
################################################

Reference:
    Ziyang Wang, Wei Wei, Gao Cong, Xiao-Li Li, Xian-Ling Mao, Minghui Qiu. "Global Context
    Enhanced Graph Neural Networks for Session-based Recommendation." SIGIR 2020.

Reference code:
    https://github.com/CCIIPLab/GCE-GNN
"""

from logging import getLogger

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llm.model.layers import config_choice, masked_softmax
from recbole_llm.model.session_graph import (
    in_chunks,
    official_init,
    reversed_positions,
    session_graph,
    training_rows,
    trim,
)

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
#: sessions encoded at once at inference (each holds L x neighbor_num^hop neighbour vectors)
INFERENCE_ROWS = 256
# relation types of the session graph, as in the official code (0: no edge)
SELF, OUT, IN, BOTH = 1, 2, 3, 4


def session_relations(item_seq, mask):
    """GCE-GNN's session graph: per session ``[L, L]`` relation types (self for each distinct
    item, out / in / both for the moves between two of them; 0 elsewhere)."""
    alias, edges = session_graph(item_seq, mask)
    eye = torch.eye(edges.size(1), dtype=torch.bool, device=edges.device)
    forward = edges.bool() & ~eye
    backward = forward.transpose(1, 2)
    relation = torch.zeros_like(edges, dtype=torch.long)
    relation[forward & ~backward] = OUT
    relation[backward & ~forward] = IN
    relation[forward & backward] = BOTH
    positions = torch.arange(alias.size(1), device=alias.device).unsqueeze(0)
    node = (alias == positions) & mask  # a position holding its item's first occurrence
    relation[node.unsqueeze(2) & eye] = SELF
    return alias, relation


def neighbor_counts(items, lengths, continues, n_items, window):
    """How often two items are at most ``window`` positions apart in a training session (both
    ways, never an item with itself): ``(source, target, count)``, sorted by source.

    ``items``, ``lengths``, ``continues``: :func:`~recbole_llm.model.session_graph.training_rows`;
    a row that extends the row before it adds only the pairs that end at its target, so a
    sequence's pairs count once however many prefixes of it are rows.
    """
    pairs = []
    for distance in range(1, window + 1):
        before, after = items[:, :-distance], items[:, distance:]
        end = torch.arange(distance, items.size(1)).unsqueeze(0)  # position of ``after``
        real = end < lengths.unsqueeze(1)
        new = ~continues.unsqueeze(1) | (end == lengths.unsqueeze(1) - 1)
        keep = real & new & (before != after) & (before > 0)
        pairs += [before[keep] * n_items + after[keep], after[keep] * n_items + before[keep]]
    keys, counts = torch.unique(torch.cat(pairs), return_counts=True)
    return keys // n_items, keys % n_items, counts


def neighbor_table(source, target, counts, n_items, neighbor_num, generator):
    """Fixed neighbour tables ``[n_items, neighbor_num]`` of ids (0 = none) and weights.

    Each item keeps its ``neighbor_num`` most frequent neighbours (ties: lower id); as in the
    official ``handle_adj``, an item with fewer draws ``neighbor_num`` of them with
    replacement, once, when the model is built.
    """
    order = torch.sort(-counts, stable=True).indices  # most frequent first
    order = order[torch.sort(source[order], stable=True).indices]  # grouped by item
    source, target, counts = source[order], target[order], counts[order]
    rank = torch.arange(len(source)) - torch.searchsorted(source, source)
    keep = rank < neighbor_num
    table = torch.zeros(n_items, neighbor_num, dtype=torch.long)
    weight = torch.zeros(n_items, neighbor_num)
    table[source[keep], rank[keep]] = target[keep]
    weight[source[keep], rank[keep]] = counts[keep].float()
    found = (table > 0).sum(dim=1, keepdim=True)
    draws = (torch.rand(n_items, neighbor_num, generator=generator) * found).long()
    draws = torch.where(found == neighbor_num, torch.arange(neighbor_num).unsqueeze(0), draws)
    return table.gather(1, draws), weight.gather(1, draws)


class LocalAggregator(nn.Module):
    """Session-level item representations: each node attends over its session-graph neighbours,
    ``e_ij = LeakyReLU(a_r^T (h_i * h_j))`` with one vector ``a_r`` per relation type."""

    def __init__(self, dim, alpha):
        super().__init__()
        self.relation_vectors = nn.Parameter(torch.empty(4, dim))  # a_self, a_out, a_in, a_both
        self.leakyrelu = nn.LeakyReLU(alpha)

    def forward(self, hidden, relation):
        weighted = hidden.unsqueeze(1) * self.relation_vectors[None, :, None]  # [B, 4, L, d]
        scores = weighted @ hidden.unsqueeze(1).transpose(2, 3)  # a_r^T (h_i * h_j), each r
        scores = scores.gather(1, (relation - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        alpha = masked_softmax(self.leakyrelu(scores), relation > 0, dim=-1)
        return alpha @ hidden


class GlobalAggregator(nn.Module):
    """Global-level item representations: a session-aware attention over an item's global
    neighbours, ``pi_j = q^T LeakyReLU(W1 [s * h_j ; w_j])``, then ``act(W2 [h_v ; h_N(v)])``."""

    def __init__(self, dim, dropout, act):
        super().__init__()
        self.w_1 = nn.Linear(dim + 1, dim, bias=False)
        self.w_2 = nn.Linear(dim, 1, bias=False)  # q
        self.w_3 = nn.Linear(2 * dim, dim, bias=False)
        self.dropout = dropout
        self.act = act

    def forward(self, own, neighbors, weights, session):
        # own [B, M, d]; neighbors [B, M, S, d]; weights [B, M, S] (0: no neighbour); session [B, d]
        features = torch.cat([session[:, None, None] * neighbors, weights.unsqueeze(-1)], -1)
        scores = self.w_2(F.leaky_relu(self.w_1(features), negative_slope=0.2)).squeeze(-1)
        alpha = masked_softmax(scores, weights > 0, dim=-1)
        combined = torch.cat([own, (alpha.unsqueeze(-1) * neighbors).sum(dim=2)], dim=-1)
        return self.act(self.w_3(F.dropout(combined, self.dropout, training=self.training)))


class GCEGNN(SequentialRecommender):
    r"""GCE-GNN: a session graph and a global item graph of all training sessions.

    Each item of a session gets a session-level representation (attention over its session
    graph) and a global-level one (``hop`` rounds of session-aware attention over its
    neighbours in the global graph, built once from the training split); their sum, with
    dropout on each, is read out by a position-aware attention over reversed positions. Scores
    are the session vector against the item embeddings.

    LLM4SBR's views: the last item's representation (local) and the position-aware readout
    (global), which is the session vector itself.
    """

    input_type = InputType.POINTWISE
    #: allowed values of config keys, checked when the config is built (and here)
    config_choices = {"activation": tuple(ACTIVATIONS)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]  # item embedding size
        self.hop = config["hop"]  # rounds of global aggregation (official n_iter)
        self.neighbor_num = config["neighbor_num"]  # neighbours per item in the global graph
        self.global_window = config["global_window"]  # epsilon: neighbour distance
        self.dropout_local = config["dropout_local"]  # on session-level representations
        self.dropout_global = config["dropout_global"]  # on global-level representations
        self.dropout_gcn = config["dropout_gcn"]  # inside the global aggregators
        activation = config_choice("activation", config["activation"], tuple(ACTIVATIONS))

        size = self.embedding_size
        self.item_embedding = nn.Embedding(self.n_items, size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, size)
        self.local_aggregator = LocalAggregator(size, config["leakyrelu_alpha"])
        self.global_aggregators = nn.ModuleList(
            GlobalAggregator(size, self.dropout_gcn, ACTIVATIONS[activation])
            for _ in range(self.hop)
        )
        self.w_1 = nn.Linear(2 * size, size, bias=False)  # [p_i; h_i] -> z_i
        self.w_2 = nn.Linear(size, 1, bias=False)  # q: beta_i
        self.glu1 = nn.Linear(size, size)
        self.glu2 = nn.Linear(size, size, bias=False)
        self._reset_parameters()

        # the global graph, from the training split only (the dataset a model is built with)
        rows = training_rows(dataset, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.ITEM_ID)
        counts = neighbor_counts(*rows, self.n_items, self.global_window)
        generator = torch.Generator().manual_seed(config["seed"])
        neighbors, weights = neighbor_table(*counts, self.n_items, self.neighbor_num, generator)
        # rebuilt from the training split whenever the model is built, so never saved
        self.register_buffer("global_neighbors", neighbors, persistent=False)
        self.register_buffer("global_weights", weights, persistent=False)
        getLogger().info(
            f"GCEGNN global graph: {int((neighbors[:, 0] > 0).sum())} of {self.n_items - 1} "
            f"items have neighbours in {len(rows[0])} training rows"
        )

    def _reset_parameters(self):
        official_init(self, self.embedding_size, self.item_embedding)

    def _global_states(self, item_seq, mask):
        """Global-level representations ``[B, L, d]`` of each position's item."""
        batch = len(item_seq)
        floatmask = mask.unsqueeze(-1).float()
        session = (self.item_embedding(item_seq) * floatmask).sum(1) / floatmask.sum(1)
        levels, weights = [item_seq], []
        for _ in range(self.hop):
            weights.append(self.global_weights[levels[-1]].view(batch, -1))
            levels.append(self.global_neighbors[levels[-1]].view(batch, -1))
        vectors = [self.item_embedding(level) for level in levels]
        shape = (batch, -1, self.neighbor_num)
        for aggregator in self.global_aggregators:
            vectors = [
                aggregator(
                    vectors[depth],
                    vectors[depth + 1].view(*shape, self.embedding_size),
                    weights[depth].view(shape),
                    session,
                )
                for depth in range(len(vectors) - 1)
            ]
        return vectors[0]

    def _item_states(self, item_seq, item_seq_len):
        """Each position's representation (session level + global level) and the mask."""
        item_seq, mask = trim(item_seq, item_seq_len)
        alias, relation = session_relations(item_seq, mask)
        local = self.local_aggregator(self.item_embedding(item_seq), relation)
        local = torch.gather(local, 1, alias.unsqueeze(-1).expand(-1, -1, local.size(-1)))
        local = F.dropout(local, self.dropout_local, training=self.training)
        global_ = F.dropout(
            self._global_states(item_seq, mask), self.dropout_global, training=self.training
        )
        return local + global_, mask

    def _readout(self, states, mask):
        """The position-aware readout ``S = sum_i beta_i h_i`` over reversed positions."""
        floatmask = mask.unsqueeze(-1).float()
        mean = (states * floatmask).sum(1) / floatmask.sum(1)
        positions = self.position_embedding(reversed_positions(mask))
        z = torch.tanh(self.w_1(torch.cat([positions, states], dim=-1)))
        beta = self.w_2(torch.sigmoid(self.glu1(z) + self.glu2(mean).unsqueeze(1)))
        return (beta * floatmask * states).sum(dim=1)

    def _session_views(self, item_seq, item_seq_len):
        states, mask = self._item_states(item_seq, item_seq_len)
        return self.gather_indexes(states, item_seq_len - 1), self._readout(states, mask)

    def session_views(self, item_seq, item_seq_len):
        """LLM4SBR's views ``[B, d]``: the last item's representation (local) and the
        position-aware readout (global)."""
        if torch.is_grad_enabled():
            return self._session_views(item_seq, item_seq_len)
        return in_chunks(self._session_views, INFERENCE_ROWS, item_seq, item_seq_len)

    def session_vector(self, local, global_):
        """GCE-GNN scores with its readout alone."""
        return global_

    def forward(self, item_seq, item_seq_len):
        """The session vectors ``[B, d]``."""
        return self.session_vector(*self.session_views(item_seq, item_seq_len))

    def calculate_loss(self, interaction):
        session = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        logits = session @ self.item_embedding.weight.T
        logits[:, 0] = float("-inf")  # the padding id is never a class
        return F.cross_entropy(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        session = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (session * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        session = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return session @ self.item_embedding.weight.T
