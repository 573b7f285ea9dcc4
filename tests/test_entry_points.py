"""RecBole baselines through recbole_llm's entry points, checkpoints reloaded for real."""

import glob
import math
import os
import socket

import pytest
import torch

from recbole_llm import quick_start
from recbole_llm.quick_start import load_data_and_model, run, run_recbole_llm
from recbole_llm.semantic_step import prepare_semantics


def assert_valid_result(result, metric="recall@10"):
    assert set(result) == {
        "best_valid_score",
        "valid_score_bigger",
        "best_valid_result",
        "test_result",
    }
    for value in result["test_result"].values():
        assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert result["test_result"][metric] >= 0.0


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "SRGNN", "BPR"])
def test_recbole_baseline_trains_saves_and_reloads(model, fast_config, tmp_path):
    result = run_recbole_llm(model=model, dataset="synth", config_dict=fast_config, saved=True)
    assert_valid_result(result)
    checkpoints = glob.glob(str(tmp_path / "saved" / f"{model}-*.pth"))
    assert len(checkpoints) == 1, "the best checkpoint is written and reloaded for the test"
    assert not torch.is_anomaly_enabled(), "RecBole's SINE import turns anomaly detection on"


def test_sequential_baseline_beats_popularity_on_synthetic_data(fast_config):
    config = dict(fast_config, epochs=8, learning_rate=0.01, valid_metric="NDCG@10")
    pop = run_recbole_llm(model="Pop", dataset="synth", config_dict=config, saved=False)
    sasrec = run_recbole_llm(model="SASRec", dataset="synth", config_dict=config, saved=False)
    assert sasrec["test_result"]["ndcg@10"] > pop["test_result"]["ndcg@10"]


def test_pop_counts_each_training_interaction_once_whatever_the_seed(fast_config):
    """RecBole 1.2.1's Pop adds one per batch per item and counts sampled negatives; ours
    (``recbole_llm/model/pop.py``) counts exactly the training interactions."""
    from recbole.model.general_recommender.pop import Pop as RecBolePop
    from recbole.utils import init_seed

    from recbole_llm.config import Config
    from recbole_llm.quick_start import _build
    from recbole_llm.registry import get_model

    assert issubclass(get_model("Pop"), RecBolePop) and get_model("Pop") is not RecBolePop
    counts = []
    for seed in (1, 2):
        # a batch large enough to hold repeated items, RecBole's default negative sampling
        # (and a split that does not depend on the seed: leave-one-out in time order)
        settings = dict(fast_config, seed=seed, train_batch_size=512, save_dataset=False)
        settings["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}
        config = Config(model="Pop", dataset="synth", config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        _, model, trainer, (train_data, _, _) = _build(config)
        trainer._train_epoch(train_data, 0)
        items = train_data.dataset.inter_feat[config["ITEM_ID_FIELD"]]
        expected = torch.bincount(items, minlength=model.n_items)
        assert torch.equal(model.item_cnt.squeeze(1), expected)
        counts.append(model.item_cnt.clone())
    assert torch.equal(counts[0], counts[1]), "popularity does not depend on the seed"


def test_load_data_and_model_reproduces_scores_from_another_cwd(fast_config, tmp_path, monkeypatch):
    result = run_recbole_llm(model="SASRec", dataset="synth", config_dict=fast_config, saved=True)
    (checkpoint,) = glob.glob(str(tmp_path / "saved" / "SASRec-*.pth"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config, model, dataset, _, _, test_data = load_data_and_model(checkpoint)
    from recbole_llm.registry import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])

    # scores, not only metrics: a second reload predicts exactly the same numbers
    _, model_again, _, _, _, _ = load_data_and_model(checkpoint)
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(batch), model_again.full_sort_predict(batch))
    assert os.path.isabs(config["data_path"])


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return str(sock.getsockname()[1])


def test_distributed_run_on_cpu_with_gloo(fast_config):
    result = run(
        "SASRec", "synth", config_dict=dict(fast_config), saved=True, nproc=2, port=free_port()
    )
    assert result is not None, "rank 0 returns the result through the queue"
    assert_valid_result(result)


def test_distributed_eimf_makes_its_semantic_files_once_before_the_ranks(
    semantic_config, monkeypatch
):
    """The launching process runs the LLM step once; the two ranks find its files current and
    train on them without rewriting any (each would otherwise make them itself, at once)."""
    made = []

    def prepare_once(config):
        manifest = prepare_semantics(config)
        folder = semantic_config["data_path"]
        made.append({path: os.stat(path).st_mtime_ns for path in data_files(folder)})
        return manifest

    monkeypatch.setattr(quick_start, "prepare_semantics", prepare_once)
    config = dict(semantic_config, interest_source="categories", hidden_size=16)
    result = run("EIMF", "synth", config_dict=config, saved=True, nproc=2, port=free_port())
    assert_valid_result(result)
    assert len(made) == 1, "the launcher prepares the semantic files once"
    names = {os.path.basename(path) for path in made[0]}
    assert {"synth.eimf.json", "synth.interest", "synth.itemtext"} <= names
    after = {path: os.stat(path).st_mtime_ns for path in made[0]}
    assert after == made[0], "a rank rewrote a semantic file"


def data_files(folder):
    return [os.path.join(d, name) for d, _, names in os.walk(folder) for name in names]
