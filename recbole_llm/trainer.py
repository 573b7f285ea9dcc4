"""Trainers: RecBole's, with the fixes RecBole 1.2.1 needs on torch >= 2.6 and on CPU DDP.

:func:`with_compat` mixes :class:`CompatTrainerMixin` into whatever trainer class RecBole (or a
model of ours) picks, so every model trained through our entry points gets the same fixes and
nothing outside those trainers is patched.

The same trainers evaluate with ``mask_history``: see :meth:`CompatTrainerMixin.evaluate`.
"""

import os
import time

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Collector, Evaluator
from recbole.trainer import Trainer
from recbole.utils import set_color
from torch.nn.parallel import DistributedDataParallel

from recbole_llm.compat import load_checkpoint, save_checkpoint
from recbole_llm.config_data import plain_config
from recbole_llm.evaluator import RecordingEvaluator, TopkCollector
from recbole_llm.training_state import ResumableStateMixin, plain_numbers, state_lock

#: Prefix of the result keys and per-user metric names evaluated with ``mask_history``.
MASKED_PREFIX = "masked_"


def epoch_progress(epoch_idx, epochs, seconds_per_epoch):
    """``epoch 7 of 20, about 6 min left`` after the 0-based epoch ``epoch_idx`` (at most:
    early stopping may end training sooner)."""
    left = max(epochs - epoch_idx - 1, 0) * seconds_per_epoch
    when = f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"
    return f"epoch {epoch_idx + 1} of {epochs}, {when if left else 'the last'}"


class CompatTrainerMixin(ResumableStateMixin):
    """Fixes for ``recbole/trainer/trainer.py`` (RecBole 1.2.1).

    - Safe checkpoints: ``_save_checkpoint`` stores the config as plain data
      (:func:`~recbole_llm.config.plain_config`, not RecBole's pickled Config, lines 299-308)
      with a checksum file beside it; ``resume_checkpoint``, ``evaluate(load_best_model=True)``
      and the training state load through :func:`~recbole_llm.compat.load_checkpoint`
      (verified, ``weights_only=True``; ``trust_checkpoint`` for files of your own without).
    - DDP on the CPU: RecBole wraps the model with ``device_ids=[local_rank]`` (lines 61-64),
      which only works for CUDA modules; on the CPU we wrap without device ids.
    - DDP checkpoint race: each rank names its own checkpoint and only rank 0 writes one, so
      before loading the best model all ranks agree on rank 0's file and wait for it.

    - Resumable training: with ``training_state_file`` set, the whole training state (model,
      optimizer, early-stopping counters, best checkpoint, timings and every random stream)
      is written there, atomically, after each validation; a later run of the same config
      resumes from it and ends bit for bit where an uninterrupted run would (see :meth:`fit`).

    - ``mask_history``: full-ranking evaluation also ranks without the items each sample had
      already interacted with (see :meth:`evaluate`).

    It also records what benchmarks need: seconds per training epoch (``epoch_seconds``),
    seconds of the last evaluation (``eval_seconds``, of which ``mask_seconds`` went to the
    masked copy) and per-user metric values (:meth:`per_user_metrics`).
    """

    def __init__(self, config, model):
        cpu_ddp = not config["single_spec"] and config["device"].type == "cpu"
        if cpu_ddp:
            config["single_spec"] = True  # keep AbstractTrainer from building a CUDA-only wrapper
        try:
            super().__init__(config, model)
        finally:
            if cpu_ddp:
                config["single_spec"] = False
        if cpu_ddp:
            self.distributed_model = DistributedDataParallel(self.model)
        if isinstance(getattr(self, "evaluator", None), Evaluator):
            self.evaluator = RecordingEvaluator(config)
        if type(getattr(self, "eval_collector", None)) is Collector:
            self.eval_collector = TopkCollector(config)
        self.masked_evaluator = None  # evaluates the masked copy of each ranking
        if config["mask_history"] and hasattr(self, "eval_collector"):
            self.masked_collector = TopkCollector(config)
            self.masked_evaluator = RecordingEvaluator(config)
        self._masking = None  # the evaluation in progress, while masking
        self.epoch_seconds = []
        self.eval_seconds = None
        self.mask_seconds = None
        self.resumed_at = []  # epochs this run resumed at (``training_state_file``)
        self._noted_losses = set()  # loss names whose note (LOSS_NOTES) was logged

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        loss = super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        """RecBole's epoch line with each loss term by its name (the model's ``loss_names``,
        set by its ``calculate_loss``) instead of train_loss1..N, and an overall counter with
        the time left: ``(epoch 7 of 20, about 6 min left)``."""
        names = getattr(self.model, "loss_names", None)
        places = self.config["loss_decimal_place"] or 4
        if isinstance(losses, tuple) and names and len(names) == len(losses):
            head = (
                set_color("epoch %d training", "green")
                + " ["
                + set_color("time", "blue")
                + ": %.2fs, "
            ) % (epoch_idx, e_time - s_time)
            terms = ", ".join(
                set_color(name, "blue") + f": {loss:.{places}f}"
                for name, loss in zip(names, losses)
            )
            line = f"{head}{terms}, {set_color('total', 'blue')}: {sum(losses):.{places}f}]"
            for name in names:
                note = getattr(self.model, "LOSS_NOTES", {}).get(name)
                if note and name not in self._noted_losses:
                    self._noted_losses.add(name)
                    self.logger.info(f"loss '{name}': {note}")
        else:
            line = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        return f"{line} ({epoch_progress(epoch_idx, self.epochs, self._seconds_per_epoch())})"

    def _seconds_per_epoch(self):
        """Mean seconds of a training epoch this run, plus its share of the last evaluation."""
        seconds = sum(self.epoch_seconds) / max(len(self.epoch_seconds), 1)
        if self.eval_seconds and self.eval_step > 0:
            seconds += self.eval_seconds / self.eval_step
        return seconds

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        """RecBole's ``fit``, resumable when the config names a ``training_state_file``.

        The state is saved after every validation (RecBole's ``callback_fn`` point: the epoch
        is trained, validated, early stopping updated and the best checkpoint written). If the
        file exists when training starts, training continues after its epoch with every random
        stream restored, or, if that run had already stopped, is not repeated at all.
        """
        state_file = self.config["training_state_file"]
        if not state_file:
            return super().fit(
                train_data, valid_data, verbose, saved, show_progress, callback_fn=callback_fn
            )
        if not self.config["single_spec"]:
            raise ValueError(
                "training_state_file: resumable training runs in one process only; "
                "drop it or train without nproc/world_size > 1"
            )
        with state_lock(state_file):
            if os.path.exists(state_file):
                finished = self._restore_training_state(state_file, train_data)
                self.resumed_at.append(self.start_epoch)
                if finished:
                    self.logger.info(f"{state_file}: training had finished; not repeated")
                    return self.best_valid_score, self.best_valid_result
                self.logger.info(f"{state_file}: resuming training at epoch {self.start_epoch}")

            def save_state(epoch_idx, valid_score):
                if callback_fn:
                    callback_fn(epoch_idx, valid_score)
                self._save_training_state(state_file, epoch_idx, train_data)

            return super().fit(
                train_data, valid_data, verbose, saved, show_progress, callback_fn=save_state
            )

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint, with the config as plain data and a checksum file beside it."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": plain_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": plain_numbers(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        save_checkpoint(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def per_user_metrics(self):
        """Per-user values of the top-k metrics of the last evaluation (see RecordingEvaluator),
        with ``mask_history`` also those of the masked ranking, under ``masked_`` names."""
        values = self.evaluator.per_user()
        if self.masked_evaluator is not None and self.masked_evaluator.last_struct is not None:
            masked = self.masked_evaluator.per_user()
            values.update({MASKED_PREFIX + name: v for name, v in masked.items()})
        return values

    def _agreed_checkpoint_file(self, model_file):
        if model_file:
            return model_file
        if not self.config["single_spec"]:
            import torch.distributed as dist

            names = [self.saved_model_file]
            dist.broadcast_object_list(names, src=0)
            dist.barrier()
            self.saved_model_file = names[0]
        return self.saved_model_file

    def load_best_model(self, model_file=None):
        """Load model parameters from ``model_file`` or this run's best checkpoint."""
        checkpoint_file = self._agreed_checkpoint_file(model_file)
        checkpoint = load_checkpoint(
            checkpoint_file, map_location=self.device, trust=self.config["trust_checkpoint"]
        )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluate; the best-model load goes through :meth:`load_best_model`.

        With ``mask_history`` on, a full-ranking evaluation computes every metric twice in one
        pass: each batch's score matrix (one forward pass) is evaluated as RecBole does, under
        RecBole's keys (``ndcg@10``), and a copy of it with the row's history items set to
        ``-inf`` is evaluated under ``masked_`` keys (``masked_ndcg@10``; ``valid_metric`` may
        name one). A row's history is what the loader's
        :class:`~recbole_llm.data.evaluation.EvalHistory` holds: for sequential models every item
        the user (for session data, the session) had before the target, however long ago; for
        general models the user's items in the earlier splits, which RecBole already masks
        unless ``repeatable`` is on (there the masked keys repeat the unmasked values). A
        target is never masked: with repeat consumption, a target that is also in the history
        keeps its score.
        """
        if eval_data and load_best_model:
            self.load_best_model(model_file)
        start = time.perf_counter()
        self._masking = self._start_masking(eval_data)
        try:
            result = super().evaluate(
                eval_data, load_best_model=False, model_file=model_file, show_progress=show_progress
            )
            if self._masking is not None and result is not None:
                result.update(self._masked_result())
        finally:
            self._masking = None
        self.eval_seconds = time.perf_counter() - start
        return result

    def _start_masking(self, eval_data):
        """The masking state of an evaluation about to run, or None if it masks nothing."""
        if self.masked_evaluator is None:
            return None
        self.masked_evaluator.last_struct = None  # per-user values belong to one evaluation
        self.mask_seconds = 0.0
        if not eval_data or not isinstance(eval_data, FullSortEvalDataLoader):
            return None
        history = getattr(eval_data, "eval_history", None)
        if history is None:
            raise ValueError(
                "mask_history: this evaluation loader has no eval_history; build the loaders "
                "with recbole_llm.data.utils.data_preparation"
            )
        # the masked collector sees the same data-level facts (item counts, ...) as RecBole's
        for key, value in self.eval_collector.data_struct._data_dict.items():
            if key.startswith("data."):
                self.masked_collector.data_struct.set(key, value)
        # sequential rows are keyed by their position in the loader's dataset, in the order
        # its sampler gives them (a distributed sampler gives each process its share)
        order = None if history.by_user else torch.as_tensor(list(eval_data.sampler))
        return {"history": history, "order": order, "done": 0, "num_sample": 0}

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        masking = self._masking
        if masking is None:
            return interaction, scores, positive_u, positive_i
        if scores.is_cuda:  # time the masked copy alone
            torch.cuda.synchronize(scores.device)
        start = time.perf_counter()
        history = masking["history"]
        if history.by_user:
            keys = interaction[self.config["USER_ID_FIELD"]]
        else:
            keys = masking["order"][masking["done"] : masking["done"] + len(interaction)]
        masking["done"] += len(interaction)
        masking["num_sample"] += len(batched_data)  # as RecBole counts, for _map_reduce
        rows, items = history.index(keys)
        masked = scores.clone()
        masked[rows.to(scores.device), items.to(scores.device)] = -np.inf
        masked[positive_u, positive_i] = scores[positive_u, positive_i]  # targets stay
        self.masked_collector.eval_batch_collect(masked, interaction, positive_u, positive_i)
        if scores.is_cuda:
            torch.cuda.synchronize(scores.device)
        self.mask_seconds += time.perf_counter() - start
        return interaction, scores, positive_u, positive_i

    def _masked_result(self):
        start = time.perf_counter()
        self.masked_collector.model_collect(self.model)
        result = self.masked_evaluator.evaluate(self.masked_collector.get_data_struct())
        if not self.config["single_spec"]:
            result = self._map_reduce(result, self._masking["num_sample"])
        self.mask_seconds += time.perf_counter() - start
        return {MASKED_PREFIX + name: value for name, value in result.items()}

    def resume_checkpoint(self, resume_file):
        """Resume training from a checkpoint (RecBole's logic, loading it safely: see
        :func:`~recbole_llm.compat.load_checkpoint`)."""
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(
            resume_file, map_location=self.device, trust=self.config["trust_checkpoint"]
        )
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                "Architecture configuration given in config file is different from that of "
                "checkpoint. This may yield an exception while state_dict is being loaded."
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


_compat_classes = {}


def with_compat(trainer_class):
    """Return ``trainer_class`` with :class:`CompatTrainerMixin` mixed in (cached per class).

    Trainers outside RecBole's ``Trainer`` hierarchy (decision trees) load nothing through
    ``torch.load`` and are returned unchanged.
    """
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, CompatTrainerMixin):
        return trainer_class
    if trainer_class not in _compat_classes:
        _compat_classes[trainer_class] = type(
            trainer_class.__name__,
            (CompatTrainerMixin, trainer_class),
            {"__module__": __name__, "__doc__": trainer_class.__doc__},
        )
    return _compat_classes[trainer_class]
