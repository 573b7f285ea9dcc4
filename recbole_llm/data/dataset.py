"""Datasets that attach the semantic step's files to RecBole interactions.

This is the only bridge between semantic files and tensors, and it knows the semantic step
only through its files contract (:mod:`recbole_llm.semantics.files`): it never runs the step.
The entry points run it before they build a dataset (:mod:`recbole_llm.semantic_step`) and
attach the manifest they checked against the run's settings. Each class loads its files once,
validates them (manifest, inputs, ids, dimensions, NaN; the settings too when a dataset is built
directly, without an entry point: they are then the one thing not checked), keeps compact
tables, and adds the per-row tensors to every batch in :meth:`join`, which RecBole's
dataloaders call for training and evaluation batches alike.

- :class:`EIMFDataset` (sequential): ``semantic_interest_row`` ``[B]``, the row of the user's
  typical user in :meth:`~EIMFDataset.interest_tables` (``[T + 1, M, D]`` interests and
  ``[T + 1, M]`` mask, stored once per typical user; row 0 has none, for users without
  semantics), plus :meth:`~EIMFDataset.item_text_matrix` ``[N, D]``.
- :class:`LLM4SBRDataset` (session benchmark files): ``long_intent`` and ``short_intent``
  ``[B, D]`` of the row's sample (``normal_intent`` for the single-view ablation); a compact
  ``.intent`` file is kept as item ids and weights, each batch's vectors rebuilt from the
  item-text table (an ``embedding_bag``), so memory grows with ``intent_topr``, not ``D``;
  its batches also carry the ids and weights (``long_intent_items``, ``long_intent_weights``).
"""

import itertools
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction

from recbole_llm.fields import (
    INTEREST_ROW,
    intent_field,
    intent_items_field,
    intent_weights_field,
)
from recbole_llm.semantics import files
from recbole_llm.semantics.files import SemanticsError


def _unknown(dataset, field, count, example, path):
    return SemanticsError(
        f"'{path}' names {count} {field} values unknown to dataset "
        f"'{dataset.dataset_name}' (e.g. '{example}'); it was made for other data. "
        "Regenerate the semantics."
    )


def _ids(dataset, field, tokens, path):
    """Internal ids of raw tokens of ``field``; an unknown token is an error naming the file."""
    mapping = dataset.field2token_id[field]
    try:
        return np.fromiter(map(mapping.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    except KeyError:
        unknown = [t for t in tokens if t not in mapping]
        raise _unknown(dataset, field, len(unknown), unknown[0], path) from None


class _Lookup:
    """Token ids a block at a time (-1 for an unknown token), counting the unknown ones so
    that the error, raised once the whole file is read, is :func:`_ids`' for the whole file."""

    def __init__(self, dataset, field, path):
        self.dataset, self.field, self.path = dataset, field, path
        self.mapping = dataset.field2token_id[field]
        self.unknown, self.example = 0, None

    def __call__(self, tokens):
        ids = np.fromiter(
            map(self.mapping.get, tokens, itertools.repeat(-1)), dtype=np.int64, count=len(tokens)
        )
        missing = np.flatnonzero(ids < 0)
        if len(missing) and self.example is None:
            self.example = tokens[missing[0]]
        self.unknown += len(missing)
        return ids

    def check(self):
        if self.unknown:
            raise _unknown(self.dataset, self.field, self.unknown, self.example, self.path)


def _require_every_id(dataset, field, ids, path, what):
    """Every id of ``field`` (but padding) must have a row; else an error naming the file."""
    covered = np.zeros(dataset.num(field), dtype=bool)
    covered[ids] = True
    if not covered[1:].all():
        missing = dataset.field2id_token[field][np.flatnonzero(~covered[1:])[0] + 1]
        raise SemanticsError(
            f"'{path}' has no {what} for {int((~covered[1:]).sum())} ids of {field} "
            f"(e.g. '{missing}'); regenerate the semantics."
        )


def _item_text(dataset, manifest):
    path = files.file_path(dataset.config, "itemtext")
    dim = manifest["dimensions"]["text"]
    tokens, vectors = files.read_vectors(path, "itemtext", "iid", "item_text", dim)
    ids = _ids(dataset, dataset.iid_field, tokens, path)
    matrix = np.zeros((dataset.item_num, dim), dtype=np.float32)
    matrix[ids] = vectors
    _require_every_id(dataset, dataset.iid_field, ids, path, "text vector")
    return torch.from_numpy(matrix)


def _read_tokens(path, expected):
    """``{column: list}`` of a file of token columns, read with :func:`files.read_columns`."""
    names = [h.split(":")[0] for h in files.HEADERS[expected]]
    table = {name: [] for name in names}
    for block in files.read_columns(path, expected):
        for name in names:
            table[name] += block[name]
    return table


class _CompactView:
    """One view of a compact ``.intent`` file, filled a block at a time: ``[S, r]`` item ids
    and weights; the checks of reading it whole (row widths, unknown items, NaN) are kept
    until :meth:`tables`, so that a broken file fails as it did when read whole."""

    def __init__(self, dataset, path, column):
        self.dataset, self.path, self.column = dataset, path, column
        self.items_of = _Lookup(dataset, dataset.iid_field, path)
        self.width, self.items, self.weights = None, None, None
        self.bad, self.not_finite = None, None  # the first row of each problem

    def add(self, block, ids, first_row):
        """Add a block whose first row is ``first_row``; ``ids``: its samples' ids (None when
        one is unknown: the file is rejected)."""
        tokens, token_lengths = block[f"{self.column}_items"]
        weights, weight_lengths = block[f"{self.column}_weights"]
        if self.width is None:
            self.width = int(token_lengths[0])
            shape = (self.dataset.user_num, self.width)
            self.items, self.weights = torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
        wrong = np.flatnonzero((token_lengths != self.width) | (weight_lengths != self.width))
        if len(wrong) and self.bad is None:
            k = wrong[0]
            self.bad = (first_row + int(k), int(token_lengths[k]), int(weight_lengths[k]))
        items = self.items_of(tokens)
        if self.bad is not None or ids is None or (items < 0).any():
            return  # the file is rejected by tables()
        weights = weights.reshape(-1, self.width)
        finite = np.isfinite(weights).all(axis=1)
        if not finite.all() and self.not_finite is None:
            self.not_finite = first_row + int(np.flatnonzero(~finite)[0])
        self.items[ids] = torch.from_numpy(items.reshape(-1, self.width))
        self.weights[ids] = torch.from_numpy(weights)

    def tables(self):
        """``([S, r] item ids, [S, r] weights)``; row 0 (padding) weighs 0."""
        if self.bad is not None:
            row, n_items, n_weights = self.bad
            raise SemanticsError(
                f"'{self.path}' row {row}: {self.column} has {n_items} items and {n_weights} "
                f"weights, expected {self.width} of each (see its manifest); regenerate the "
                "semantics."
            )
        self.items_of.check()
        if self.not_finite is not None:
            raise SemanticsError(
                f"'{self.path}' row {self.not_finite}: {self.column} contains NaN or inf."
            )
        if self.width is None:  # a file without rows
            shape = (self.dataset.user_num, 0)
            return torch.zeros(shape, dtype=torch.long), torch.zeros(shape)
        return self.items, self.weights


class EIMFDataset(SequentialDataset):
    """Sequential dataset with EIMF's semantics: typical users' interests and item text.

    With ``semantics_required: False`` (used when a checkpoint is reloaded for inference)
    missing or stale semantics are skipped instead of created: EIMF predicts from behaviour
    (the semantic step then attaches no manifest).
    """

    def __init__(self, config):
        super().__init__(config)
        self.item_text = None
        self._interest_table = None
        self._user_row = None
        self.semantics_manifest = None
        self._load_semantics()

    def _load_semantics(self):
        config = self.config
        attached, manifest = files.attached_manifest(config, "eimf")
        if not attached:
            try:
                manifest = files.read_manifest(config, "eimf")
            except SemanticsError as err:
                if config["semantics_required"] is not False:
                    raise
                getLogger().info(f"No semantics loaded (not needed for inference): {err}")
                return
        if manifest is None:
            return
        self.item_text = _item_text(self, manifest)
        max_interests, dim = manifest["dimensions"]["max_interests"], manifest["dimensions"]["text"]

        path = files.file_path(config, "interest")
        table = files.read_table(path, "interest")
        vectors = files.stack_vectors(
            path, "interest_emb", table["interest_emb"], max_interests * dim
        )
        counts = np.array(table["interest_num"], dtype=np.int64)
        if ((counts < 0) | (counts > max_interests)).any():
            raise SemanticsError(f"'{path}': interest_num must be within 0..{max_interests}.")
        typical_ids = _ids(self, self.uid_field, table["tuid"], path)
        # row 0: no semantics (users without a typical user, typical users without interests)
        interests = np.zeros((len(counts) + 1, max_interests, dim), dtype=np.float32)
        interests[1:] = vectors.reshape(-1, max_interests, dim)
        mask = np.zeros((len(counts) + 1, max_interests), dtype=bool)
        mask[1:] = np.arange(max_interests)[None, :] < counts[:, None]
        row_of_typical = dict(zip(typical_ids.tolist(), range(1, len(counts) + 1)))

        path = files.file_path(config, "usertypical")
        table = _read_tokens(path, "usertypical")
        users = _ids(self, self.uid_field, table["uid"], path)
        typical = _ids(self, self.uid_field, table["tuid"], path)
        not_typical = [t for t in typical.tolist() if t not in row_of_typical]
        if not_typical:
            raise SemanticsError(
                f"'{path}' maps users to {len(not_typical)} typical users that have no row in "
                f"'{files.file_path(config, 'interest')}'."
            )
        user_row = np.zeros(self.user_num, dtype=np.int64)
        user_row[users] = [row_of_typical[t] for t in typical.tolist()]
        self._interest_table = torch.from_numpy(interests)
        self._interest_mask = torch.from_numpy(mask)
        self._user_row = torch.from_numpy(user_row)
        self.semantics_manifest = manifest
        without = int((~mask[user_row].any(axis=1))[1:].sum())
        getLogger().info(
            f"EIMF semantics: {len(counts)} typical users, {without} of {self.user_num - 1} "
            "users without semantic interests (their semantic losses are masked out)"
        )

    @property
    def has_semantics(self):
        return self._interest_table is not None

    def item_text_matrix(self):
        """``[n_items, D]`` item text vectors (row 0, the padding id, is zero); None without
        semantics."""
        return self.item_text

    def interest_tables(self):
        """``([T + 1, M, D] interest vectors, [T + 1, M] mask)``, one row per typical user (row
        0: none), or None without semantics. Batches carry only the row (``INTEREST_ROW``), so
        a model projects each typical user's interests once per batch, not each user's copy."""
        if not self.has_semantics:
            return None
        return self._interest_table, self._interest_mask

    def users_without_semantics(self):
        """How many users have no semantic interests (None when no semantics are loaded)."""
        if not self.has_semantics:
            return None
        rows = self._user_row[1:]
        return int((~self._interest_mask[rows].any(dim=1)).sum())

    def join(self, df):
        df = super().join(df)
        if self.has_semantics and self.uid_field in df:
            df.update(Interaction({INTEREST_ROW: self._user_row[df[self.uid_field]]}))
        return df


class LLM4SBRDataset(SequentialDataset):
    """Session dataset (RecBole benchmark files) with each sample's intent vectors, one field
    per view of the semantics (``long_intent`` and ``short_intent`` by default)."""

    def __init__(self, config):
        super().__init__(config)
        self._load_intents()

    def _load_intents(self):
        attached, manifest = files.attached_manifest(self.config, "llm4sbr")
        if not attached:  # built directly, not through an entry point
            manifest = files.read_manifest(self.config, "llm4sbr")
        dim, views = manifest["dimensions"]["text"], manifest["views"]
        form = files.intent_form(self.config, manifest)
        path = files.file_path(self.config, "intent")
        self._intents = {}  # dense: {field: [S, D]}
        self._localised = {}  # compact: {field: ([S, r] item ids, [S, r] weights)}
        self._item_text = None
        if form == "compact":
            self._load_compact(manifest, path, views)
        else:
            table = files.read_table(path, files.intent_header(views, form))
            ids = _ids(self, self.uid_field, table["sid"], path)
            _require_every_id(self, self.uid_field, ids, path, "intents")
            for view in views:
                column = intent_field(view)
                matrix = torch.zeros(self.user_num, dim)
                vectors = files.stack_vectors(path, column, table[column], dim)
                matrix[ids] = torch.from_numpy(vectors)
                self._intents[column] = matrix
        self.intent_views = views
        self.intent_dim = dim
        self.intent_form = form  # compact batches also carry each view's items and weights
        self.semantics_manifest = manifest

    def _load_compact(self, manifest, path, views):
        """A compact ``.intent`` file, read a block of rows at a time (millions of sessions)."""
        sessions = _Lookup(self, self.uid_field, path)
        compact = [_CompactView(self, path, intent_field(view)) for view in views]
        all_ids, row = [], 1
        for block in files.read_columns(path, files.intent_header(views, "compact")):
            ids = sessions(block["sid"])
            all_ids.append(ids)
            for view in compact:
                view.add(block, ids if (ids >= 0).all() else None, row)
            row += len(ids)
        sessions.check()
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
        _require_every_id(self, self.uid_field, ids, path, "intents")
        self._item_text = _item_text(self, manifest)
        for view in compact:
            self._localised[view.column] = view.tables()

    def item_text_matrix(self):
        """``[n_items, D]`` item text vectors from ``.itemtext`` (row 0, the padding id, is
        zero), read on first use for a dense file."""
        if self._item_text is None:
            self._item_text = _item_text(self, self.semantics_manifest)
        return self._item_text

    def intents(self, field, sessions):
        """``[B, D]`` intents of ``field`` for the session ids ``sessions``; a compact view is
        rebuilt from the item-text table (the weighted sum of its items' vectors)."""
        if field in self._intents:
            return self._intents[field][sessions]
        items, weights = self._localised[field]
        return F.embedding_bag(
            items[sessions], self._item_text, per_sample_weights=weights[sessions], mode="sum"
        )

    def mean_intents(self):
        """``{view: [D]}``: each view's intent averaged over every sample (the padding row left
        out), the constant that LLM4SBR's ``intent_control: mean`` gives every session."""
        means = {}
        for view in self.intent_views:
            field = intent_field(view)
            if field in self._intents:
                means[view] = self._intents[field][1:].mean(dim=0)
                continue
            items, weights = self._localised[field]
            total = torch.zeros(self.item_num).index_add_(
                0, items[1:].flatten(), weights[1:].flatten()
            )
            means[view] = total @ self._item_text / (self.user_num - 1)
        return means

    def join(self, df):
        df = super().join(df)
        if self.uid_field in df:
            sessions = df[self.uid_field]
            added = {}
            for view in self.intent_views:
                field = intent_field(view)
                added[field] = self.intents(field, sessions)
                if field in self._localised:  # a model may score from the items themselves
                    items, weights = self._localised[field]
                    added[intent_items_field(view)] = items[sessions]
                    added[intent_weights_field(view)] = weights[sessions]
            df.update(Interaction(added))
        return df
