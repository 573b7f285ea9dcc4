"""Resumable training: an interrupted run, resumed, ends bit for bit where an uninterrupted one
does; a finished state is not retrained; a state from another config is refused."""

import os
import subprocess
import sys

import pytest
import torch
from recbole.utils import init_seed

from recbole_llm.config import Config
from recbole_llm.quick_start import train_and_test
from recbole_llm.trainer import CompatTrainerMixin
from recbole_llm.training_state import lock_path


class Interrupted(Exception):
    pass


def run(model, config_dict, interrupt_at=None, monkeypatch=None):
    """Train and test as the benchmark worker does: a fresh config, seeded, then fit."""
    config = Config(model=model, dataset="synth", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    if interrupt_at is not None:
        original = CompatTrainerMixin._train_epoch

        def train_epoch(self, train_data, epoch_idx, **kwargs):
            if epoch_idx == interrupt_at:
                raise Interrupted
            return original(self, train_data, epoch_idx, **kwargs)

        monkeypatch.setattr(CompatTrainerMixin, "_train_epoch", train_epoch)
        try:
            with pytest.raises(Interrupted):
                train_and_test(config, verbose=False)
        finally:
            monkeypatch.setattr(CompatTrainerMixin, "_train_epoch", original)
        return None
    result, trainer, _ = train_and_test(config, verbose=False)
    return result, trainer


@pytest.fixture(params=["SASRec", "EIMF"])
def resumable(request, fast_config, semantic_config, tmp_path):
    """SASRec (dropout draws from torch's stream; the loader shuffles with its own generator)
    and EIMF-REMI (semantic features, its own losses, its sampled semantic classes drawn from
    the model's own generator), three epochs with no early stop."""
    base = semantic_config if request.param == "EIMF" else fast_config
    config = dict(base, epochs=3, stopping_step=10, hidden_dropout_prob=0.3)
    if request.param == "EIMF":
        config.update(interest_source="categories", hidden_size=16, semantic_negatives=5)
    return request.param, config


def test_an_interrupted_run_resumes_bit_for_bit(resumable, tmp_path, monkeypatch):
    model, config = resumable
    whole_state = str(tmp_path / "whole.pth")
    whole, whole_trainer = run(
        model, dict(config, training_state_file=whole_state, checkpoint_dir=str(tmp_path / "a"))
    )
    assert whole_trainer.resumed_at == [] and len(whole_trainer.epoch_seconds) == 3

    split = dict(config, training_state_file=str(tmp_path / "split.pth"))
    run(
        model,
        dict(split, checkpoint_dir=str(tmp_path / "b")),
        interrupt_at=2,
        monkeypatch=monkeypatch,
    )
    assert os.path.exists(split["training_state_file"]), "epochs 0 and 1 left their state"
    # a new process would start from a fresh seed; the state file must restore every stream
    torch.manual_seed(12345)
    resumed, resumed_trainer = run(model, dict(split, checkpoint_dir=str(tmp_path / "c")))
    assert resumed_trainer.resumed_at == [2]
    assert len(resumed_trainer.epoch_seconds) == 3, "timings of all three epochs are kept"
    assert resumed_trainer.train_loss_dict == whole_trainer.train_loss_dict
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]
    final, expected = resumed_trainer.model.state_dict(), whole_trainer.model.state_dict()
    assert all(torch.equal(final[k], expected[k]) for k in expected)

    # the state of a finished run: nothing is retrained, the same test result comes back
    again, again_trainer = run(model, dict(split, checkpoint_dir=str(tmp_path / "d")))
    assert again_trainer.resumed_at == [2, 3] and len(again_trainer.epoch_seconds) == 3
    assert again["test_result"] == whole["test_result"]


def test_a_state_from_another_config_is_refused(fast_config, tmp_path):
    state = str(tmp_path / "state.pth")
    run("SASRec", dict(fast_config, training_state_file=state))
    with pytest.raises(ValueError, match="different config"):
        run("SASRec", dict(fast_config, training_state_file=state, learning_rate=0.01))


def test_a_state_in_use_by_another_process_is_refused(fast_config, tmp_path):
    """Two processes must not train one state: the second fails at once, naming the first."""
    state = str(tmp_path / "state.pth")
    hold = (
        "import fcntl, os, sys, time\n"
        "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(str(os.getpid())); f.flush(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, lock_path(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            RuntimeError, match=rf"in use by another running process \(pid {holder.pid}\)"
        ):
            run("SASRec", dict(fast_config, training_state_file=state))
        assert not os.path.exists(state), "the refused run wrote nothing"
    finally:
        holder.kill()
        holder.wait()
    # the lock ends with its process: now the run trains and writes its state
    run("SASRec", dict(fast_config, training_state_file=state))
    assert os.path.exists(state)
