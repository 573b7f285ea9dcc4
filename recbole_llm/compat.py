"""The few shims RecBole 1.2.1 needs on today's numpy, torch and pandas, in one place.

Process-wide changes are kept to three (the anomaly switch, a private method scipy removed, and
silencing the FutureWarnings that RecBole's own files raise on pandas 2 / torch 2.x:
``data/dataset/dataset.py:648-650`` chained ``fillna(inplace=True)``, which pins pandas<3, and
``trainer/trainer.py`` ``amp.GradScaler``; they say nothing a RecBole user can act on and bury
the log); everything else is a narrow fix applied where RecBole's own code is called:

============================================  ==================================================
RecBole 1.2.1 file (what breaks)              our fix
============================================  ==================================================
``model/sequential_recommender/sine.py:25``   :func:`apply` switches anomaly detection back off
calls ``torch.autograd.set_detect_anomaly``   after the package is imported (about 1.5x faster
(True)`` at import, for every model           training for every sequential model).
``trainer/trainer.py:299-308`` pickles the    our checkpoints store the config as plain data
whole Config into every checkpoint, and       (:func:`recbole_llm.config.plain_config`) beside a
``trainer.py:323,583``,                       sha256 file; :func:`load_checkpoint` verifies it and
``quick_start/quick_start.py:250`` unpickle   loads with ``weights_only=True`` (nothing is
it with ``torch.load`` (arbitrary code on     unpickled but tensors and plain data); used by
torch < 2.6; torch >= 2.6 refuses it)         :class:`recbole_llm.trainer.CompatTrainerMixin` and
                                              :func:`recbole_llm.quick_start.load_data_and_model`.
``config/configurator.py:476-515`` and        ``Config._init_device`` uses gloo and the CPU when
``trainer/trainer.py:61-64`` hard-code NCCL,  no GPU is wanted; the trainer mixin builds DDP
CUDA devices and ``device_ids``               without ``device_ids`` on the CPU.
``trainer/trainer.py:132,583`` DDP ranks      the trainer mixin broadcasts rank 0's checkpoint
name their own checkpoint and read rank 0's   name and waits on a barrier before loading it.
file while it is being written
``data/dataset/dataset.py:232-252`` tries to  :func:`recbole_llm.data.prepare.ensure_dataset`
download a missing dataset (hangs offline,    prepares known datasets or fails with the command
then ``barrier()`` without a process group)   that prepares them, before RecBole looks.
``config/configurator.py:330-334`` forces     ``Config._set_default_parameters`` keeps ml-100k in
``ml-100k`` to RecBole's installed copy       our writable data root.
``data/utils.py:59-67`` reuses a pickled      :func:`recbole_llm.data.utils.create_dataset` also
dataset when RecBole's own dataset keys       compares our dataset keys and the atomic files'
match, ignoring extension keys                size and modification time.
``model/general_recommender/lightgcn.py:111``  :func:`apply` gives ``scipy.sparse.dok_matrix``
(and ``ngcf.py:110``, ``ncl.py:131``,          back the private ``_update`` that scipy >= 1.13
``spectralcf.py:123``, ``gcmc.py:174``,        removed: RecBole builds adjacency matrices with
``kgat.py``, ``kgin.py:356``,                  ``A._update(data_dict)``, an unchecked bulk
``mcclk.py:425``) call ``dok_matrix._update``  ``dict.update`` of the matrix's entries; ours is
                                               the same update of today's ``_dict`` storage.
``model/sequential_recommender/sasrecf.py``   :func:`fix_feature_models`, applied by the entry
``:45-52`` counts ``dataset.num(field)``      points after building a model, rebuilds SASRecF's
features for a float_seq field, where         ``concat_layer`` at the width of the features its
``FeatureSeqEmbLayer`` gives one: its         layer embeds; a float_seq item feature (the item
``concat_layer`` has the wrong width; and     text vectors, ``item_text_source``) then trains.
``:99`` (also GRU4RecF, FDSA) names the       It drops submodules from ``other_parameter_name``
``feature_embed_layer`` module in             (their weights are in the state dict), so these
``other_parameter_name``: pickled into        checkpoints load safely. It computes float_seq
every checkpoint; ``model/layers.py``         embeddings with one ``embedding_bag`` instead of
``:1017-1053`` embeds each float_seq element  a ``[B, L, D, H]`` product (10 GB for SASRecF on
before pooling (``[B, L, D, H]``)             ml-100k with the 384-d text vectors).
``data/dataset/dataset.py:803-815`` gives     :class:`recbole_llm.data.item_text.ItemTextDataset`
every element of a numerical float_seq the    stores the item text vectors with index ``j + 1``
index 1 (the vector enters as its mean), and  for element ``j`` (the embedding layer's table is
``:365-383`` never joins                      then a linear map of the whole vector) and joins
``additional_feat_suffix`` features into the  them into the item features itself.
item features
``model/general_recommender/pop.py:33``       :class:`recbole_llm.model.pop.Pop` (found before
counts ``item_cnt[item] += 1`` by index       RecBole's by our registry) counts each positive
assignment (once per batch, however often     training interaction once.
an item repeats) and counts sampled negatives
============================================  ==================================================

Pins (see README): numpy<2 (``compatibility_settings`` reads ``np.float_``; ray 2.6.3 reads
``np.bool8``), pandas<3 (copy-on-write turns RecBole's chained ``fillna(inplace=True)`` into
no-ops), setuptools<82 (ray 2.6.3 imports ``pkg_resources``).
"""

import hashlib
import io
import os
import pickle
import re
import types

from recbole_llm.errors import UserError
from recbole_llm.utils import atomic_write

_applied = False


def apply():
    """Apply the process-wide shims once. Safe to call any number of times."""
    global _applied
    if _applied:
        return
    # Importing the package runs sine.py, which turns anomaly detection on for the process.
    import warnings

    import recbole.model.sequential_recommender  # noqa: F401
    import torch

    torch.autograd.set_detect_anomaly(False)
    _restore_dok_update()
    # only warnings raised from RecBole's own modules; ours and everyone else's still show
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
    _applied = True


def _dok_update(self, entries):
    """``dok_matrix._update`` as scipy < 1.13 had it: set many entries at once, unchecked."""
    self._dict.update(entries)


def _restore_dok_update():
    import scipy.sparse

    dok = scipy.sparse.dok_matrix
    if not hasattr(dok, "_update") and hasattr(dok((1, 1)), "_dict"):
        dok._update = _dok_update


def fix_feature_models(model):
    """Fixes for RecBole's feature-aware models, applied right after one is built:

    - a submodule named in ``other_parameter_name`` (SASRecF, GRU4RecF, FDSA name their
      ``feature_embed_layer``: ``sasrecf.py:99``) is pickled whole into every checkpoint, so
      a safe load refuses it; its weights are in the state dict and the model builds the module
      itself, so it is dropped from that list;
    - ``FeatureSeqEmbLayer.embed_float_seq_fields`` (``model/layers.py:1017-1053``) builds an
      embedding per element before pooling, ``[B, L, D, H]``: 10 GB at batch 2048, length 50,
      a 384-d text vector and size 64 (a one-epoch SASRecF run on ml-100k was killed for
      memory); sum and mean pooling are computed as one ``embedding_bag`` instead (the same
      values to float rounding, tested), max pooling as RecBole does;
    - SASRecF sizes ``concat_layer`` for ``1 + sum(dataset.num(field))`` embeddings of a
      float_seq field (``sasrecf.py:45-52``), but its ``FeatureSeqEmbLayer`` gives one per
      selected field: the layer is rebuilt at the width it is fed (initialised as SASRecF
      initialises its layers; without a float_seq feature nothing changes);
    - KSR keeps its pre-trained relation vectors as ``relation_Matrix``, a float64 tensor
      (``data/dataset/dataset.py:621`` fills preloaded weights into ``np.zeros``, float64;
      ``ksr.py:92``), and multiplies it with its float32 sequence output (``ksr.py:153``:
      ``RuntimeError: expected m1 and m2 to have the same dtype``): it is cast to float32.

    Returns True if SASRecF's layer was rebuilt."""
    import torch
    from recbole.model.sequential_recommender.ksr import KSR
    from recbole.model.sequential_recommender.sasrecf import SASRecF
    from torch import nn

    if isinstance(model, KSR) and model.relation_Matrix.dtype != torch.float32:
        model.relation_Matrix = model.relation_Matrix.float()

    layer = getattr(model, "feature_embed_layer", None)
    if layer is not None and hasattr(layer, "embed_float_seq_fields"):
        layer.embed_float_seq_fields = types.MethodType(_embed_float_seq_fields, layer)
    names = getattr(model, "other_parameter_name", None)
    if names:
        model.other_parameter_name = [
            name for name in names if not isinstance(getattr(model, name, None), nn.Module)
        ]
    if not isinstance(model, SASRecF):
        return False
    fields = sum(model.feature_embed_layer.num_feature_field.values())
    width = model.hidden_size * (1 + fields)
    old = model.concat_layer
    if old.in_features == width:
        return False
    model.concat_layer = nn.Linear(width, model.hidden_size).to(old.weight.device)
    model._init_weights(model.concat_layer)
    return True


def _embed_float_seq_fields(self, float_seq_fields, source):
    """RecBole's ``embed_float_seq_fields`` without the ``[..., D, H]`` product: for each field
    (``[..., D, 2]``: values and indices), ``sum_j value_j * E[index_j]`` over the entries whose
    index is not 0, divided by their count for ``mean``; ``[..., n_fields, H]`` or None."""
    import torch
    import torch.nn.functional as F
    from recbole.model.layers import ContextSeqEmbAbstractLayer

    if self.pooling_mode not in ("sum", "mean"):
        return ContextSeqEmbAbstractLayer.embed_float_seq_fields(self, float_seq_fields, source)
    results = []
    for i, field in enumerate(float_seq_fields):
        table = self.float_seq_embedding_table[source][i].weight
        values, index = field[..., 0], field[..., 1].long()
        rows, width = values.shape[:-1], values.shape[-1]
        flat_index = index.reshape(-1, width)
        pooled = F.embedding_bag(
            flat_index,
            table,
            per_sample_weights=values.reshape(-1, width),
            mode="sum",
            padding_idx=0,
        )
        if self.pooling_mode == "mean":
            count = (flat_index != 0).sum(dim=-1, keepdim=True).to(pooled.dtype)
            pooled = pooled / (count + 1e-8)
        results.append(pooled.view(*rows, 1, -1))
    return torch.cat(results, dim=-2) if results else None


#: Suffix of the checksum file beside each checkpoint and training state.
CHECKSUM_SUFFIX = ".sha256"

#: Opt-in that also loads files without our checksum, or holding pickled objects.
TRUST_ADVICE = (
    "only for files you made yourself, load it with trust_checkpoint=True (config key, or "
    "load_data_and_model(..., trust_checkpoint=True)): unpickling runs whatever code it holds"
)

_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")

# checksum of each file this process serialised itself: those may be unpickled in full (a
# RecBole model's other_parameter can hold numpy arrays or modules), nothing else may
_written = {}


class CheckpointError(UserError):
    """A checkpoint or training state that is missing, damaged or not safe to load; the
    message names the file."""


def checksum_path(path):
    """The checksum file beside ``path`` (``sha256sum -c`` reads it)."""
    return str(path) + CHECKSUM_SUFFIX


def _recorded_digests(path):
    try:
        with open(checksum_path(path), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [line.split()[0] for line in lines if line.split()]


def write_checked(path, data):
    """Write the bytes ``data`` to ``path`` atomically, with their sha256 in the file beside it;
    returns the digest.

    While the file is replaced the checksum file lists the old and the new digest, so a process
    killed between the two renames leaves a pair that still verifies.
    """
    path = str(path)
    name = os.path.basename(path)
    digest = hashlib.sha256(data).hexdigest()

    def record(digests):
        atomic_write(checksum_path(path), lambda f: f.writelines(f"{d}  {name}\n" for d in digests))

    record([digest] + _recorded_digests(path)[:1])
    atomic_write(path, lambda f: f.write(data), binary=True)
    record([digest])
    return digest


def save_checkpoint(state, path):
    """``torch.save`` ``state`` to ``path`` through :func:`write_checked`."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    _written[os.path.realpath(str(path))] = write_checked(path, buffer.getvalue())


def load_checkpoint(path, map_location=None, trust=False):
    """Load a checkpoint or training state written by :func:`save_checkpoint`.

    The file must match its checksum file and is loaded with ``weights_only=True``: tensors
    and plain data, never pickled objects. ``trust`` (config key ``trust_checkpoint``) also
    loads a file without a checksum file and one holding pickled objects (checkpoints of
    RecBole or of an older recbole_llm pickle their Config): only for files you made yourself.

    Raises:
        CheckpointError: naming the file, if it is missing, damaged (truncated, changed bytes),
            unverifiable or holds pickled objects, without ``trust``.
    """
    import torch

    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    recorded = _recorded_digests(path)
    if recorded and digest not in recorded:
        raise CheckpointError(
            f"Checkpoint '{path}' ({len(data)} bytes) does not match its checksum in "
            f"'{checksum_path(path)}': it is truncated or damaged. Restore it from a copy or "
            "train again."
        )
    if not recorded and not trust:
        raise CheckpointError(
            f"Checkpoint '{path}' has no checksum file '{checksum_path(path)}', so it cannot "
            "be verified (recbole_llm writes one beside every checkpoint; this file comes from "
            f"elsewhere or an older version). If it is yours: {TRUST_ADVICE}."
        )
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if trust or _written.get(os.path.realpath(path)) == digest:
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
        found = _UNSAFE_GLOBAL.search(str(err))
        raise CheckpointError(
            f"Checkpoint '{path}' holds pickled Python objects"
            f"{f' ({found.group(1)})' if found else ''}, which are not loaded because "
            f"unpickling can run code. If it is yours: {TRUST_ADVICE}."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"Cannot read checkpoint '{path}': it is truncated or not a torch file ({first})."
        ) from None
