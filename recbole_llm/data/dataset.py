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
  item-text table (an ``embedding_bag``), so memory grows with ``intent_topr``, not ``D``.
"""

from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction

from recbole_llm.fields import INTEREST_ROW, intent_field
from recbole_llm.semantics import files
from recbole_llm.semantics.files import SemanticsError


def _ids(dataset, field, tokens, path):
    """Internal ids of raw tokens of ``field``; an unknown token is an error naming the file."""
    mapping = dataset.field2token_id[field]
    unknown = [t for t in tokens if t not in mapping]
    if unknown:
        raise SemanticsError(
            f"'{path}' names {len(unknown)} {field} values unknown to dataset "
            f"'{dataset.dataset_name}' (e.g. '{unknown[0]}'); it was made for other data. "
            "Regenerate the semantics."
        )
    return np.array([mapping[t] for t in tokens], dtype=np.int64)


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
    table = files.read_table(path, "itemtext")
    dim = manifest["dimensions"]["text"]
    vectors = files.stack_vectors(path, "item_text", table["item_text"], dim)
    ids = _ids(dataset, dataset.iid_field, table["iid"], path)
    matrix = np.zeros((dataset.item_num, dim), dtype=np.float32)
    matrix[ids] = vectors
    _require_every_id(dataset, dataset.iid_field, ids, path, "text vector")
    return torch.from_numpy(matrix)


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
        table = files.read_table(path, "usertypical")
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
        table = files.read_table(path, files.intent_header(views, form))
        ids = _ids(self, self.uid_field, table["sid"], path)
        _require_every_id(self, self.uid_field, ids, path, "intents")
        self._intents = {}  # dense: {field: [S, D]}
        self._localised = {}  # compact: {field: ([S, r] item ids, [S, r] weights)}
        self._item_text = _item_text(self, manifest) if form == "compact" else None
        for view in views:
            column = intent_field(view)
            if form == "dense":
                matrix = torch.zeros(self.user_num, dim)
                vectors = files.stack_vectors(path, column, table[column], dim)
                matrix[ids] = torch.from_numpy(vectors)
                self._intents[column] = matrix
            else:
                self._localised[column] = self._compact_view(path, column, table, ids)
        self.intent_views = views
        self.intent_dim = dim
        self.semantics_manifest = manifest

    def _compact_view(self, path, column, table, ids):
        """A compact view's ``([S, r] item ids, [S, r] weights)``; row 0 (padding) weighs 0."""
        tokens, weights = table[f"{column}_items"], table[f"{column}_weights"]
        width = len(tokens[0]) if tokens else 0
        for row, (t, w) in enumerate(zip(tokens, weights)):
            if len(t) != width or len(w) != width:
                raise SemanticsError(
                    f"'{path}' row {row + 1}: {column} has {len(t)} items and {len(w)} weights, "
                    f"expected {width} of each (see its manifest); regenerate the semantics."
                )
        flat = _ids(self, self.iid_field, [t for row in tokens for t in row], path)
        items = torch.zeros(self.user_num, width, dtype=torch.long)
        items[ids] = torch.from_numpy(flat.reshape(len(tokens), width))
        matrix = torch.zeros(self.user_num, width)
        matrix[ids] = torch.from_numpy(files.stack_vectors(path, column, weights, width))
        return items, matrix

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
            fields = [intent_field(view) for view in self.intent_views]
            df.update(Interaction({field: self.intents(field, sessions) for field in fields}))
        return df
