"""The LLM signal must reach the ranking, and controls that remove it must cost the gain.

On sessions whose targets no item-id model can predict (``planted.py``), an oracle LLM server
names each sample's target; LLM4SBR must then beat its backbone by a wide margin, and lose
that margin when its intents are shuffled across sessions or replaced by their mean, at
training and at inference. On user sequences drawn from hidden groups that only the oracle
names, EIMF (behaviour-only inference) must beat its backbone, and lose the gain with shuffled
typical users, the target's own text as the readout, or the item alignment alone.
"""

import logging
import os
import sys

import pytest
import torch
from conftest import REPO
from planted import (
    PLANTED_CONFIG,
    PLANTED_USERS_CONFIG,
    InterestOracle,
    OracleServer,
    write_planted_sessions,
    write_planted_users,
)

from recbole_llm import semantic_step
from recbole_llm.config import Config
from recbole_llm.quick_start import train_and_test

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import probe_intent_text  # noqa: E402
import probe_signal  # noqa: E402


def oracle_settings(root, oracle):
    """Settings both planted tests share: the oracle as LLM, private folders, a small model."""
    return dict(
        data_path=str(root),
        llm_backend="openai",
        llm_model="oracle",
        llm_base_url=oracle.url,
        semantics_dir=str(root / "semantics"),
        semantics_cache_dir=str(root / "cache"),
        embedding_size=32,
        hidden_size=32,
        learning_rate=0.005,
        train_batch_size=128,
        topk=[10],
        valid_metric="NDCG@10",
        show_progress=False,
        state="ERROR",
        seed=2020,
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted dataset, its oracle server (running for the module) and shared settings."""
    root = tmp_path_factory.mktemp("planted")
    _, targets = write_planted_sessions(str(root))
    with OracleServer(targets) as oracle:
        config = dict(
            PLANTED_CONFIG,
            **oracle_settings(root, oracle),
            epochs=25,
            stopping_step=25,
            eval_batch_size=256,
            metrics=["Recall", "NDCG"],
        )
        yield config, oracle


def train(model, config_dict, tmp_path):
    config = Config(
        model=model,
        dataset="planted",
        config_dict=dict(config_dict, checkpoint_dir=str(tmp_path / "saved")),
    )
    result, trainer, test_data = train_and_test(config, saved=False, verbose=False)
    return result["test_result"]["ndcg@10"], trainer.model, test_data


def top10(model, test_data):
    model.eval()
    lists = []
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = float("-inf")
            lists.append(scores.topk(10, dim=1).indices)
    return torch.cat(lists)


def test_llm4sbr_gains_from_planted_intents_and_loses_it_under_controls(
    planted, tmp_path, monkeypatch
):
    config, oracle = planted
    logged = []  # what the semantic step logs, by level (logging's own state varies by test order)
    log = type("Log", (), {"info": lambda _, m: logged.append((logging.INFO, m))})
    log.warning = lambda _, m: logged.append((logging.WARNING, m))
    monkeypatch.setattr(semantic_step, "getLogger", log)
    base = dict(config, backbone="GRU4Rec", fusion="residual")  # the score fusion: below
    backbone, _, _ = train("GRU4Rec", base, tmp_path)
    enhanced, model, test_data = train("LLM4SBR", base, tmp_path)
    assert oracle.requests > 0
    # a first run's missing semantics are an INFO line naming the command, not a warning
    first_run = [(level, m) for level, m in logged if "yet: auto_semantics is on" in m]
    assert first_run and all(level == logging.INFO for level, _ in first_run)
    assert "--llm_model=oracle" in first_run[0][1]
    assert not any(level >= logging.WARNING for level, _ in logged), logged
    # ids carry nothing: the backbone ranks at chance (10 of 40 items: NDCG@10 about 0.1)
    assert backbone < 0.2
    assert enhanced > backbone + 0.25, (enhanced, backbone)

    # the same trained model, shuffled intents at inference: most top-10 lists change
    real_lists = top10(model, test_data)
    model.intent_control, model.control_phase = "shuffle", "inference"
    shuffled_lists = top10(model, test_data)
    overlap = torch.tensor(
        [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(real_lists, shuffled_lists)]
    )
    assert overlap.mean() < 0.6, overlap.mean()
    model.intent_control, model.control_phase = "none", "both"

    # benchmarks/probe_signal.py reports the same on any checkpoint
    rows = probe_signal.inference_controls(model, test_data)
    assert rows["real"][0] > rows["shuffle"][0] + 0.25 and rows["real"][0] > rows["mean"][0] + 0.25
    assert rows["shuffle"][1] < 0.6 and (model.intent_control, model.control_phase) == (
        "none",
        "both",
    )

    # the paper's fusion, where unnormalised views drown the intents, gains far less
    paper, _, _ = train("LLM4SBR", dict(base, fusion="paper", global_pool="sum"), tmp_path)
    assert enhanced > paper + 0.2, (enhanced, paper)

    for control in ("shuffle", "mean"):
        controlled, _, _ = train("LLM4SBR", dict(base, intent_control=control), tmp_path)
        assert controlled < backbone + 0.1, (control, controlled, backbone)
        assert enhanced - controlled > 0.2, (control, enhanced, controlled)


def test_llm4sbr_score_fusion_gains_from_planted_intents_and_loses_it_shuffled(planted, tmp_path):
    config, _ = planted
    base = dict(config, backbone="GRU4Rec", fusion="score")
    backbone, _, _ = train("GRU4Rec", base, tmp_path)
    enhanced, model, _ = train("LLM4SBR", base, tmp_path)
    assert enhanced > backbone + 0.25, (enhanced, backbone)
    assert (model.intent_weight > 0).all(), model.intent_weight  # it learned to trust them
    shuffled, _, _ = train("LLM4SBR", dict(base, intent_control="shuffle"), tmp_path)
    assert shuffled < backbone + 0.1 and enhanced - shuffled > 0.2, (enhanced, shuffled)


def test_probe_intent_text_finds_the_planted_intents_and_nothing_in_the_controls(planted):
    from recbole_llm.data.utils import data_preparation
    from recbole_llm.quick_start import create_dataset

    config, _ = planted
    config = Config(model="LLM4SBR", dataset="planted", config_dict=dict(config))
    train, valid, _ = data_preparation(config, create_dataset(config))
    results, count = probe_intent_text.measure(valid, train._dataset)
    assert count == len(valid.dataset)
    # the oracle names the target: its intents rank it far above the LLM-free queries
    for view in ("long", "short"):
        assert results[view]["ndcg@10"] > 0.5, results
        for control in ("last item", "session mean", "random"):
            assert results[view]["ndcg@10"] > results[control]["ndcg@10"] + 0.3, results
        # added to the last item's text they lift it: they say what the last item does not
        combined = results[f"last item + {view}"]["ndcg@10"]
        assert combined > results["last item"]["ndcg@10"] + 0.2, results
    assert "last item + long + short" in results


def test_eimf_gains_from_planted_interests_and_loses_it_under_controls(tmp_path):
    root = tmp_path / "data"
    _, group_of = write_planted_users(str(root))
    with InterestOracle(group_of) as oracle:
        base = dict(
            PLANTED_USERS_CONFIG,
            **oracle_settings(root, oracle),
            # every user is typical: its own reply (the groups are not in the item texts, so
            # clustering by text could not find them)
            typical_selection="kmeans",
            typical_ratio=1.0,
            epochs=60,
            stopping_step=60,
            eval_batch_size=512,
            metrics=["NDCG"],
            mask_history=True,
        )
        eimf = dict(base, backbone="GRU4Rec", semantic_targets="id", semantic_weight=1.0)

        def score(model, config_dict):
            config = Config(
                model=model,
                dataset="planted-users",
                config_dict=dict(config_dict, checkpoint_dir=str(tmp_path / "saved")),
            )
            result = train_and_test(config, saved=False, verbose=False)[0]["test_result"]
            return result["ndcg@10"], result["masked_ndcg@10"]

        backbone = score("GRU4Rec", base)
        enhanced = score("EIMF", eimf)
        # one prompt per typical user (k-means merges users with the same items)
        requests = oracle.requests
        assert requests > 290
        controls = {
            "shuffled typical users": score(
                "EIMF",
                dict(eimf, typical_assignment="shuffled", semantics_dir=str(root / "shuffled")),
            ),
            "target text": score("EIMF", dict(eimf, semantic_control="target_text")),
            "item alignment only": score("EIMF", dict(eimf, semantic_control="item_align_only")),
        }
        assert oracle.requests == requests  # the shuffled control reused the cached replies
    # unmasked and with each user's history masked: a clear gain over the backbone ...
    for k in (0, 1):
        assert enhanced[k] > backbone[k] * 2, (enhanced, backbone)
        # ... that no LLM-free control keeps
        for name, controlled in controls.items():
            assert controlled[k] < backbone[k] + 0.015, (name, controlled, backbone)
            assert enhanced[k] - controlled[k] > 0.02, (name, enhanced, controlled)
