"""Every model RecBole 1.2.1 ships trains one epoch and is evaluated through our entry point
(issue 27), on a tiny dataset with a knowledge graph written at test time
(:func:`synthetic.write_synthetic_knowledge`).

The models are the names RecBole's model sub-packages import (``recbole_models``), never a hand
list. By default a representative subset runs: one model per sub-package, and every model a
compat fix touches (the graph models whose source calls ``dok_matrix._update``, found in
RecBole's files; KSR; LightGBM and XGBoost). Every model:

    RECBOLE_LLM_ALL_MODELS=1 python -m pytest tests/test_recbole_models.py

A model whose optional package does not import here is skipped with our one-line message
(KGAT needs dgl, KGIN and MCCLK torch_scatter, NCL faiss, the boosting models their library).
The settings are those of ``benchmarks/recbole_compat.py``, which writes
``results/recbole-compat.md`` from the same runs on ml-100k.
"""

import os
import sys

import numpy as np
import pytest
from conftest import FAST, REPO
from synthetic import write_synthetic_knowledge

from recbole_llm.model.lookup import (
    MissingPackageError,
    _classes_in_files,
    check_optional_package,
    recbole_models,
)
from recbole_llm.quick_start import objective_function, run_recbole_llm

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from recbole_compat import run_settings  # noqa: E402

FAMILIES = recbole_models()
ALL_MODELS = os.environ.get("RECBOLE_LLM_ALL_MODELS", "") not in ("", "0")

#: one model per RecBole sub-package
REPRESENTATIVES = {
    "general_recommender": "BPR",
    "sequential_recommender": "SASRec",
    "context_aware_recommender": "DeepFM",
    "knowledge_aware_recommender": "CKE",
    "exlib_recommender": "XGBoost",
}


def _models_calling_dok_update():
    """RecBole's models whose file calls ``._update(`` on a ``dok_matrix`` (compat's fix)."""
    import recbole.model

    base = os.path.dirname(recbole.model.__file__)
    found = []
    for model, family in FAMILIES.items():
        with open(os.path.join(base, family, f"{model.lower()}.py"), encoding="utf-8") as f:
            source = f.read()
        if "dok_matrix" in source and "._update(" in source:
            found.append(model)
    return found


DOK_UPDATE_MODELS = _models_calling_dok_update()
#: other models a fix of ours touches: KSR's float64 relation matrix (compat.fix_feature_models),
#: the boosting trainers' fit without callback_fn (quick_start.train_and_test)
OTHER_FIXED = ["KSR", "LightGBM", "XGBoost"]
SUBSET = sorted(set(REPRESENTATIVES.values()) | set(DOK_UPDATE_MODELS) | set(OTHER_FIXED))

#: settings only the tiny dataset needs (48 items, 60 users)
TINY = {
    "SASRecCPR": {"reranker_CAN_NUM": 20},  # its default 100 exceeds the items
    "GRU4RecCPR": {"reranker_CAN_NUM": 20},
    "NCL": {"num_clusters": 8},  # k-means needs more users than clusters
}

KNOWLEDGE_LOAD_COL = {
    "inter": ["user_id", "item_id", "rating", "timestamp"],
    "item": ["item_id", "release_year", "class"],
    "kg": ["head_id", "relation_id", "tail_id"],
    "link": ["item_id", "entity_id"],
}


@pytest.fixture(scope="module")
def knowledge_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("knowledge"))
    write_synthetic_knowledge(root, "synth-kg")
    return root


def model_config(model, root, tmp_path):
    """FAST on the tiny knowledge dataset, with the model's own sizes (ConvNCF's kernels need
    its 64-d embeddings, GRU4RecKG's the 64-d entity vectors) and its run settings."""
    config = {k: v for k, v in FAST.items() if k not in ("embedding_size", "hidden_size")}
    config.update(
        model=model,
        dataset="synth-kg",
        data_path=root,
        checkpoint_dir=str(tmp_path / "saved"),
        load_col=KNOWLEDGE_LOAD_COL,
    )
    config.update(run_settings(model, FAMILIES[model]))
    config.update(TINY.get(model, {}))
    return config


def check_result(result):
    test = result["test_result"]
    assert test, "no test metrics"
    for name, value in test.items():
        assert np.isfinite(value), f"{name} = {value}"
        if name != "logloss":
            assert 0 <= value <= 1, f"{name} = {value}"


def skip_without_package(model):
    try:
        check_optional_package(model)
    except MissingPackageError as err:
        pytest.skip(str(err))


def test_every_recbole_model_is_enumerated():
    """The sub-packages' imports name every model file of RecBole (one class per file), the
    subset has one model of each sub-package and every fixed model."""
    import recbole.model

    base = os.path.dirname(recbole.model.__file__)
    on_disk = {
        name for family in set(FAMILIES.values()) for name in _classes_in_files(f"{base}/{family}")
    }
    assert set(FAMILIES) == on_disk
    assert len(FAMILIES) >= 90 and {"LightGCN", "SASRec", "KGIN", "LightGBM"} <= set(FAMILIES)
    assert {"LightGCN", "NGCF", "NCL", "SpectralCF", "GCMC", "KGIN", "MCCLK"} <= set(
        DOK_UPDATE_MODELS
    )
    assert {FAMILIES[m] for m in REPRESENTATIVES.values()} == set(FAMILIES.values())


@pytest.mark.parametrize("model", list(FAMILIES) if ALL_MODELS else SUBSET)
def test_model_trains_one_epoch_and_evaluates(model, knowledge_root, tmp_path):
    skip_without_package(model)
    result = objective_function(
        config_dict=model_config(model, knowledge_root, tmp_path), saved=False
    )
    assert result["model"] == model
    check_result(result)


@pytest.mark.parametrize("model", ["LightGBM", "XGBoost"])
def test_boosting_models_save_and_reload_their_best_model(model, knowledge_root, tmp_path):
    """run_recbole_llm with ``saved=True``: the boosting trainers write their own model file
    and the test evaluation reloads it (they are not torch modules: no checkpoint of ours)."""
    skip_without_package(model)
    result = run_recbole_llm(config_dict=model_config(model, knowledge_root, tmp_path))
    check_result(result)
    assert os.listdir(tmp_path / "saved")


def test_missing_package_is_one_line_naming_the_model(monkeypatch):
    """A model whose package does not import fails at lookup, in one line naming the model,
    the package and what to do."""
    from recbole_llm.model import lookup

    monkeypatch.setitem(sys.modules, "dgl", None)  # import dgl raises ModuleNotFoundError
    with pytest.raises(MissingPackageError) as err:
        lookup.get_model("KGAT")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("Model KGAT needs dgl") and "not installed" in message
    assert "torch 2.0.0 to 2.2.1" in message


def test_command_line_says_in_one_line_why_kgin_cannot_run(knowledge_root, tmp_path):
    """``run_recbole_llm.py --model=KGIN`` without torch_scatter: one ``error:`` line, status 2,
    no traceback."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch_scatter") is not None:
        pytest.skip("torch_scatter is installed here")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_llm.py"), "--model=KGIN"]
        + ["--dataset=synth-kg", f"--data_path={knowledge_root}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Model KGIN needs torch_scatter")
    assert "Traceback" not in result.stderr
