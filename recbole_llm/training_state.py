"""Resumable training: the state a run saves after every validated epoch (model, optimizer,
best checkpoint, every random generator) and restores to continue bit for bit, and the lock
that keeps one process per state (a second run of the same state fails at once, naming the
first one's process id, instead of overwriting its progress).
"""

import contextlib
import hashlib
import json
import os
import random

import numpy as np
import torch

from recbole_llm.compat import load_checkpoint, save_checkpoint, write_checked
from recbole_llm.keys import VOLATILE_KEYS

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one run per state file is then up to the user
    fcntl = None


def lock_path(state_file):
    """The lock file beside a training state (see :func:`state_lock`)."""
    return state_file + ".lock"


@contextlib.contextmanager
def state_lock(state_file):
    """Hold ``<state_file>.lock`` exclusively while a run trains from ``state_file``.

    Two processes training one state would overwrite each other's progress (a benchmark rerun
    while an orphaned worker still trains, say); the second one fails at once instead, naming
    the first one's process id. The lock is the kernel's (``flock``), so it ends with its
    process however that ends; the small file stays.
    """
    if fcntl is None:
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(state_file)), exist_ok=True)
    with open(lock_path(state_file), "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RuntimeError(
                f"training_state_file '{state_file}' is in use by another running process "
                f"(pid {f.read().strip() or 'unknown'}); wait for it to finish or stop it, "
                "then run again"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield  # closing the file releases the lock


def state_holder(state_file):
    """The pid of the process training ``state_file`` now, or None if none is."""
    lock = lock_path(state_file)
    if fcntl is None or not os.path.exists(lock):
        return None
    with open(lock, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "unknown"
    return None  # closing the file released the shared lock just taken


def plain_numbers(value):
    """``value`` with numpy scalars made Python numbers (a safe load refuses numpy objects)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, plain_numbers(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain_numbers(v) for v in value)
    return value


class ResumableStateMixin:
    """The training state of :class:`recbole_llm.trainer.CompatTrainerMixin` (``fit`` saves it
    after each validated epoch when ``training_state_file`` is set, and resumes from it)."""

    def _run_identity(self):
        """A digest of what this run computes (the config without where/how-verbose keys)."""
        config = {
            k: v
            for k, v in self.config.final_config_dict.items()
            if k not in VOLATILE_KEYS  # training_state_file among them
        }
        canonical = json.dumps(config, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _save_training_state(self, state_file, epoch_idx, train_data):
        best = None
        if os.path.exists(self.saved_model_file):
            with open(self.saved_model_file, "rb") as f:
                best = f.read()
        generator = getattr(train_data, "generator", None)
        bit_generator, mt_keys, position, has_gauss, cached_gaussian = np.random.get_state()
        state = {
            "identity": self._run_identity(),
            "epoch": epoch_idx,
            "finished": self.cur_step > self.stopping_step or epoch_idx + 1 >= self.epochs,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "train_loss_dict": self.train_loss_dict,
            "epoch_seconds": self.epoch_seconds,
            "resumed_at": self.resumed_at,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "best_checkpoint": best,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                # numpy's state as a tensor: a safe (weights-only) load refuses numpy arrays
                "numpy": (
                    bit_generator,
                    torch.from_numpy(mt_keys.astype(np.int64)),
                    position,
                    has_gauss,
                    cached_gaussian,
                ),
                "python": random.getstate(),
                "loader": generator.get_state() if generator is not None else None,
                "model": {name: g.get_state() for name, g in model_generators(self.model)},
            },
        }
        save_checkpoint(plain_numbers(state), state_file)

    def _restore_training_state(self, state_file, train_data):
        """Load a state written by :meth:`_save_training_state`; True if training had ended."""
        # RNG states stay on the CPU
        state = load_checkpoint(
            state_file, map_location="cpu", trust=self.config["trust_checkpoint"]
        )
        if state.get("identity") != self._run_identity():
            raise ValueError(
                f"training_state_file '{state_file}' was written by a run with a different "
                "config; delete it to start afresh, or point training_state_file elsewhere"
            )
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.train_loss_dict = state["train_loss_dict"]
        self.epoch_seconds = list(state["epoch_seconds"])
        self.resumed_at = list(state["resumed_at"])
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        self.optimizer.load_state_dict(state["optimizer"])
        if state["best_checkpoint"] is not None:
            write_checked(self.saved_model_file, state["best_checkpoint"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        numpy_state = rng["numpy"]
        if torch.is_tensor(numpy_state[1]):
            mt_keys = numpy_state[1].numpy().astype(np.uint32)
            numpy_state = (numpy_state[0], mt_keys, *numpy_state[2:])
        np.random.set_state(numpy_state)
        random.setstate(rng["python"])
        generator = getattr(train_data, "generator", None)
        if rng["loader"] is not None and generator is not None:
            generator.set_state(rng["loader"])
        saved = rng.get("model") or {}  # states written before models' generators were kept
        for name, model_generator in model_generators(self.model):
            if name in saved:
                model_generator.set_state(saved[name])
        return state["finished"]


def model_generators(model):
    """``(name, generator)`` for each ``torch.Generator`` a model's modules hold as attributes
    (LLM4SBR's shuffled-intent draws, EIMF's sampled classes): kept in the training state, so a
    resumed run draws what an uninterrupted one would."""
    for prefix, module in model.named_modules():
        for attr, value in sorted(vars(module).items()):
            if isinstance(value, torch.Generator):
                yield (f"{prefix}.{attr}" if prefix else attr), value
