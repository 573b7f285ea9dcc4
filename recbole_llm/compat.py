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
``trainer/trainer.py:323,583`` and            :func:`load_checkpoint` passes ``weights_only=False``
``quick_start/quick_start.py:250`` call       for checkpoints our entry points wrote themselves
``torch.load`` without ``weights_only``;      (they pickle RecBole's Config); used by
torch >= 2.6 refuses the pickled Config       :class:`recbole_llm.trainer.CompatTrainerMixin` and
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
``model/general_recommender/pop.py:33``       :class:`recbole_llm.model.pop.Pop` (found before
counts ``item_cnt[item] += 1`` by index       RecBole's by our registry) counts each positive
assignment (once per batch, however often     training interaction once.
an item repeats) and counts sampled negatives
============================================  ==================================================

Pins (see README): numpy<2 (``compatibility_settings`` reads ``np.float_``; ray 2.6.3 reads
``np.bool8``), pandas<3 (copy-on-write turns RecBole's chained ``fillna(inplace=True)`` into
no-ops), setuptools<82 (ray 2.6.3 imports ``pkg_resources``).
"""

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


def load_checkpoint(path, map_location=None):
    """Load a checkpoint written by RecBole's trainer (it pickles the Config object).

    Only for files our own entry points wrote: ``weights_only=False`` unpickles arbitrary
    objects, which is what RecBole's checkpoints need.
    """
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)
