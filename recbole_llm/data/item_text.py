"""Item text for models without semantics of their own: the text-aware baselines.

``item_text_source: eimf | llm4sbr`` names the semantic step whose ``.itemtext`` file (each
item's text vector, the one EIMF and LLM4SBR read) a run of another model reads, so that a gain
of EIMF or LLM4SBR can be told apart from "the model saw item text". The entry points then
build :class:`ItemTextDataset`, which reads the files that step made (it never makes them: a
run of another model, with its own semantic settings, must not overwrite EIMF's or LLM4SBR's;
their ``.itemtext`` depends only on the item texts and the encoder, which must match) and offers
the vectors in two ways:

- the item feature ``item_text``, for RecBole's feature-aware sequential models (SASRecF,
  GRU4RecF, FDSA) with ``selected_features: [item_text]`` and ``numerical_features:
  [item_text]``. Each vector is stored in the float_seq form RecBole's ``FeatureSeqEmbLayer``
  embeds, value ``x_j`` with index ``j + 1``, so the layer's table is a learned linear map of
  the whole vector: ``sum_j x_j e_j = W x`` with ``pooling_mode: sum`` (SASRecF's and
  GRU4RecF's default), ``W x / D`` with ``mean`` (FDSA's);
- :meth:`ItemTextDataset.item_text_matrix` ``[N, D]``, which ``item_text_init`` projects into
  a model's item embedding table before training (:func:`init_item_embeddings`).

Why not RecBole's own route: in RecBole 1.2.1 a numerical float_seq without discretization gets
the index 1 for every element (``data/dataset/dataset.py:803-815``, ``_discretization``), so
``FeatureSeqEmbLayer`` multiplies all ``D`` values by one shared row and pools them: the vector
reaches the model only as its mean times one learned vector. Features of
``additional_feat_suffix`` files are loaded but never joined into the item features, nor read
from ``semantics_dir``, so ``selected_features`` cannot name them. (SASRecF also sizes its
concat layer wrongly for a float_seq field: :func:`recbole_llm.compat.fix_feature_models`.)
"""

import json
import math

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_llm.data.dataset import _item_text
from recbole_llm.errors import UserError
from recbole_llm.semantics import files

#: ``item_text_source``: none, or the semantic step whose ``.itemtext`` a run reads
SOURCES = ("none", "eimf", "llm4sbr")
#: ``item_text_init``: how item text vectors become a model's initial item embeddings
INITS = ("none", "pca", "random")
#: the item feature a model selects to read the text vectors
FIELD = "item_text"


def item_text_source(config):
    """The config's ``item_text_source`` ("none" or a semantic step), checked against the run:
    a sequential model without semantics of its own; ``item_text_init`` needs a source; a
    model that selects the feature must have it among ``numerical_features``."""
    source, init = config["item_text_source"] or "none", config["item_text_init"] or "none"
    checked = (("item_text_source", source, SOURCES), ("item_text_init", init, INITS))
    for key, value, allowed in checked:
        if value not in allowed:
            raise UserError(f"{key} must be one of {', '.join(allowed)}, got '{value}'")
    if source == "none":
        if init != "none":
            raise UserError(
                f"item_text_init: {init} initialises item embeddings from item text vectors; "
                "name the semantic step that makes them: item_text_source: eimf | llm4sbr"
            )
        return source
    own = getattr(getattr(config, "model_class", None), "semantics", None)
    problem = None
    if own is not None:
        problem = f"{config['model']} reads its own semantics ({own})"
    elif config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        problem = f"{config['model']} is not a sequential model"
    elif FIELD in (config["selected_features"] or []) and FIELD not in (
        config["numerical_features"] or []
    ):
        problem = (
            f"selected_features names {FIELD} but numerical_features does not; RecBole embeds "
            f"a float_seq feature only when it is numerical: add numerical_features: [{FIELD}]"
        )
    if problem:
        raise UserError(f"item_text_source: {source} cannot be used here: {problem}.")
    return source


#: the settings a ``.itemtext`` file depends on (besides the dataset's files)
ITEM_TEXT_SETTINGS = ("text_fields", "encoder_model")


def item_text_manifest(config, kind):
    """The manifest of the semantics ``kind`` made for the config's dataset, checked: current
    inputs and files, and the item texts and encoder the config names (the other settings, the
    LLM's, do not change ``.itemtext``). Missing or stale semantics are an error that says how
    to make them; they are never made here."""
    manifest = files.read_manifest(config, kind)
    made_with = manifest.get("settings") or {}
    for key in ITEM_TEXT_SETTINGS:
        wanted = json.loads(json.dumps(config[key], default=str))
        if made_with.get(key) != wanted:
            raise files.SemanticsError(
                f"item_text_source: {kind}: the {kind} semantics of dataset "
                f"'{config['dataset']}' were made with {key} {made_with.get(key)!r}, this run "
                f"names {wanted!r}; set the same {key}, or remake them with: "
                f"{files.default_command(config, kind)}"
            )
    return manifest


class ItemTextDataset(SequentialDataset):
    """A sequential dataset (user sequences or session benchmark files) with each item's text
    vector from the ``.itemtext`` file of the semantic step ``item_text_source`` names: as the
    item feature ``item_text`` and as :meth:`item_text_matrix` (see the module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        kind = item_text_source(config)
        if kind == "none":
            raise UserError("ItemTextDataset needs item_text_source: eimf | llm4sbr")
        manifest = item_text_manifest(config, kind)
        self.item_text = _item_text(self, manifest)
        self.semantics_manifest = manifest
        self._add_item_feature(self.item_text.numpy())

    def _discretization(self):
        # RecBole's pass reads every numerical feature's column, and item_text is added after
        # it (by id, in our own numerical form): leave it out of that pass
        numerical = self.config["numerical_features"]
        self.config["numerical_features"] = [f for f in numerical or [] if f != FIELD]
        try:
            super()._discretization()
        finally:
            self.config["numerical_features"] = numerical

    def _add_item_feature(self, matrix):
        """``item_text`` as an item feature (rows by item id; the padding row has none)."""
        if self.item_feat is None:  # e.g. session files: item features of the text alone
            self.item_feat = pd.DataFrame({self.iid_field: np.arange(self.item_num)})
            self.feat_name_list.append("item_feat")  # so that build() makes it an Interaction
        elif FIELD in self.item_feat:
            raise UserError(f"Dataset '{self.dataset_name}' already has an item field {FIELD}.")
        ids = self.item_feat[self.iid_field].to_numpy()
        if not np.array_equal(ids, np.arange(self.item_num)):
            raise ValueError("item features are not one row per item id, in id order")
        width = matrix.shape[1]
        if FIELD in (self.config["numerical_features"] or []):
            # value j with index j + 1 (0 marks padding): FeatureSeqEmbLayer gives W x
            index = np.arange(1, width + 1, dtype=np.float64)
            column = [(row, index if i else np.zeros(width)) for i, row in enumerate(matrix)]
            self.field2bucketnum[FIELD] = width + 1
        else:
            column = list(matrix)
        self.item_feat[FIELD] = column
        self.set_field_property(FIELD, FeatureType.FLOAT_SEQ, FeatureSource.ITEM, width)

    def item_text_matrix(self):
        """``[n_items, D]`` item text vectors (row 0, the padding id, is zero)."""
        return self.item_text


def project_item_text(text, width, method, seed):
    """Item text vectors ``[N, D]`` (row 0: padding) mapped to ``[N - 1, width]`` for items
    1..N-1, centred first (sentence vectors share a large common direction):

    - ``pca``: the scores on the ``width`` leading principal components (signs fixed so each
      component's largest loading is positive): a deterministic projection that keeps as
      much of the vectors' variance, and so of their similarities, as ``width`` dimensions can;
    - ``random``: a Gaussian random projection (``N(0, 1 / width)`` entries, drawn from
      ``seed``), which keeps inner products in expectation (Johnson-Lindenstrauss).
    """
    real = text[1:].double()
    real = real - real.mean(dim=0)
    if method == "pca":
        if width > min(real.shape):
            raise UserError(
                f"item_text_init: pca gives at most {min(real.shape)} components of "
                f"{real.shape[1]}-d text vectors over {real.shape[0]} items, the model's item "
                f"embeddings have {width}; use item_text_init: random"
            )
        _, _, components = torch.linalg.svd(real, full_matrices=False)
        components = components[:width]
        strongest = components.abs().argmax(dim=1)
        signs = torch.sign(components[torch.arange(width), strongest])
        return real @ (components * signs.unsqueeze(1)).T
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(real.size(1), width, generator=generator, dtype=torch.float64)
    return real @ matrix / math.sqrt(width)


def init_item_embeddings(model, text, method, seed):
    """Initialise ``model.item_embedding`` (an ``nn.Embedding`` of every item) from the item text
    vectors ``text`` ``[N, D]``, projected (:func:`project_item_text`) and scaled to the
    standard deviation the model's own initialisation gave the table (so training starts on its
    usual scale); the padding row keeps its initial value. Returns the projected table."""
    embedding = getattr(model, "item_embedding", None)
    if not isinstance(embedding, torch.nn.Embedding) or embedding.num_embeddings != len(text):
        raise UserError(
            f"item_text_init: {type(model).__name__} has no item_embedding table of its "
            f"{len(text)} items to initialise"
        )
    table = embedding.weight
    projected = project_item_text(text, table.size(1), method, seed)
    own_std, projected_std = float(table[1:].detach().std()), float(projected.std())
    if own_std > 0 and projected_std > 0:
        projected = projected * (own_std / projected_std)
    with torch.no_grad():
        table[1:] = projected.to(table.dtype)
    return projected
