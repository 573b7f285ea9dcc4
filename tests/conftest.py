"""Shared fixtures: every test runs in its own temporary working directory, offline."""

import os
import sys

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from synthetic import write_synthetic_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path, monkeypatch):
    """RecBole writes log/, log_tensorboard/ and saved/ into the working directory, and its
    Config parses sys.argv: run each test in a temporary folder with a clean argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Data root holding the synthetic dataset ``synth`` (shared: tests must not write to it)."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(str(root), "synth")
    return str(root)


@pytest.fixture
def fast_config(synthetic_root, tmp_path):
    """Settings that make any model train for one epoch in seconds on ``synth``."""
    return {
        "data_path": synthetic_root,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "train_batch_size": 256,
        "eval_batch_size": 256,
        "MAX_ITEM_LIST_LENGTH": 10,
        "embedding_size": 16,
        "hidden_size": 16,
        "show_progress": False,
        "state": "ERROR",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "seed": 2020,
    }
