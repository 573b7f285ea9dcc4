"""Session graphs of a batch, and the training sessions that global structures are built from.

Shared by TAGNN, GCE-GNN and DHCN. Sequences are left-aligned and right-padded, as RecBole
builds them; a position at or past its sequence's length counts as padding whatever it holds.

A session's graph has one node per position (:func:`session_graph`): the node of a repeated
item is the position of its first occurrence, and the other positions are unused nodes with no
edges that are never read back. Built with tensor ops on the batch's device, it gives the node
states SR-GNN's per-session ``np.unique`` loop gives, in another node order.
"""

import math

import torch
from torch import nn


def official_init(module, size, padding_embedding):
    """The session GNNs' official initialisation: every weight uniform in +-1/sqrt(size), and
    the padding row of ``padding_embedding`` (an ``nn.Embedding``) zero."""
    bound = 1.0 / math.sqrt(size)
    for weight in module.parameters():
        nn.init.uniform_(weight, -bound, bound)
    with torch.no_grad():
        padding_embedding.weight[0].zero_()


def trim(item_seq, item_seq_len):
    """The batch cut to its longest sequence with padding zeroed: ``(item_seq, mask)``, the
    mask True at real positions."""
    item_seq = item_seq[:, : max(int(item_seq_len.max()), 1)]
    positions = torch.arange(item_seq.size(1), device=item_seq.device)
    mask = positions.unsqueeze(0) < item_seq_len.unsqueeze(1)
    return item_seq.masked_fill(~mask, 0), mask


def reversed_positions(mask):
    """Each position's distance from its session's last item (0 for the last; 0 at padding):
    the position index GCE-GNN and DHCN embed."""
    lengths = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    return (lengths - 1 - positions).clamp(min=0) * mask


def session_graph(item_seq, mask):
    """Each session as a directed graph: ``alias`` ``[B, L]`` (each position's node) and
    ``edges`` ``[B, L, L]`` (1.0 where the session moves from node u to node v)."""
    batch, length = item_seq.shape
    same = item_seq.unsqueeze(2) == item_seq.unsqueeze(1)
    alias = same.to(torch.uint8).argmax(dim=2)  # the first position holding the same item
    edges = torch.zeros(batch, length, length, device=item_seq.device)
    moves = mask[:, 1:]  # position i -> i + 1 inside the session
    rows = torch.arange(batch, device=item_seq.device).unsqueeze(1).expand(-1, length - 1)
    edges[rows[moves], alias[:, :-1][moves], alias[:, 1:][moves]] = 1.0
    return alias, edges


def srgnn_adjacency(edges):
    """SR-GNN's ``[B, L, 2L]`` connection matrix: incoming edges normalised by the node's
    in-degree, then outgoing edges by its out-degree."""
    in_degree = edges.sum(dim=1).clamp(min=1)
    out_degree = edges.sum(dim=2).clamp(min=1)
    incoming = edges.transpose(1, 2) / in_degree.unsqueeze(2)
    outgoing = edges / out_degree.unsqueeze(2)
    return torch.cat([incoming, outgoing], dim=2)


def gather_nodes(hidden, alias):
    """Node states ``[B, L, d]`` read back at each position."""
    return torch.gather(hidden, 1, alias.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))


def in_chunks(function, rows, *tensors):
    """``function(*tensors)`` computed on slices of at most ``rows`` rows and concatenated
    (inference on large evaluation batches without holding every intermediate at once)."""
    total = len(tensors[0])
    if total <= rows:
        return function(*tensors)
    parts = [function(*(t[i : i + rows] for t in tensors)) for i in range(0, total, rows)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(part) for part in zip(*parts))
    return torch.cat(parts)


def training_rows(dataset, item_seq_field, item_seq_len_field, item_field):
    """A sequential training dataset's rows as sessions, for the global structures.

    Each row of RecBole's training split is a history and its target; both are training
    interactions, and nothing of the validation or test split is in this dataset. RecBole's
    prefix augmentation turns one sequence into a row per prefix: a row that extends the row
    before it (same user, its history is that row's history plus target, cut to the last
    ``MAX_ITEM_LIST_LENGTH``) is marked, so a sequence counts once, not once per prefix.

    Returns:
        tuple: ``items`` ``[R, L + 1]`` (each row's history, then its target, right-padded),
        ``lengths`` ``[R]`` (history length + 1) and ``continues`` ``[R]`` (True where the row
        extends the row before it).
    """
    history = dataset.inter_feat[item_seq_field].long()
    history_len = dataset.inter_feat[item_seq_len_field].long()
    target = dataset.inter_feat[item_field].long()
    rows, max_len = history.shape
    positions = torch.arange(max_len, device=history.device).unsqueeze(0)
    history = history.masked_fill(positions >= history_len.unsqueeze(1), 0)
    items = torch.cat([history, history.new_zeros(rows, 1)], dim=1)
    items[torch.arange(rows), history_len] = target
    lengths = history_len + 1

    continues = torch.zeros(rows, dtype=torch.bool)
    user = dataset.inter_feat[dataset.uid_field] if dataset.uid_field else None
    if rows > 1 and user is not None:
        previous, previous_len = items[:-1], lengths[:-1]
        grown = (previous_len <= max_len) & (history_len[1:] == previous_len)
        grown &= (history[1:] == previous[:, :max_len]).all(dim=1)
        slid = (previous_len == max_len + 1) & (history_len[1:] == max_len)
        slid &= (history[1:] == previous[:, 1:]).all(dim=1)
        continues[1:] = (user[1:] == user[:-1]) & (grown | slid)
    return items, lengths, continues
