"""The papers' own setups, as labelled options: EIMF's ComiRec protocol (``eval_protocol:
comirec``) and LLM4SBR's paper mode (every epoch's test metrics, best per metric)."""

import os

import numpy as np
import pytest
import torch

from recbole_llm.config import Config
from recbole_llm.data.evaluation import MultiTargetEvalDataLoader
from recbole_llm.data.utils import data_preparation
from recbole_llm.errors import UserError
from recbole_llm.protocols import COMIREC_SPLIT_SEED
from recbole_llm.quick_start import _build, create_dataset, run_recbole_llm

#: user u (1..N_USERS) has LENGTHS[u - 1] interactions, items "u0", "u1", ... in time order
LENGTHS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
N_USERS = len(LENGTHS)
#: items every user also sees first, so training and evaluation users share items
SHARED = ["s1", "s2"]


def sequence(user):
    """The time-ordered item tokens of one hand-made user."""
    n = LENGTHS[int(user) - 1]
    own = [f"{user}x{position}" for position in range(n - len(SHARED))]
    return (SHARED + own)[:n] if n > len(SHARED) else SHARED[:n]


@pytest.fixture
def hand_made(tmp_path):
    """Data root with ``hand``: user sequences of lengths 2..21 (.inter only)."""
    folder = tmp_path / "data" / "hand"
    os.makedirs(folder)
    with open(folder / "hand.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, N_USERS + 1):
            for step, item in enumerate(sequence(user)):
                f.write(f"{user}\t{item}\t{1_000_000 * user + 60 * step}\n")
    return str(tmp_path / "data")


def comirec_config(data_path, tmp_path, **extra):
    return {
        "data_path": data_path,
        "checkpoint_dir": str(tmp_path / "saved"),
        "eval_protocol": "comirec",
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 3,  # several evaluation batches
        "MAX_ITEM_LIST_LENGTH": 5,  # shorter than the longer histories
        "embedding_size": 8,
        "hidden_size": 8,
        "n_layers": 1,
        "n_heads": 1,
        "inner_size": 16,
        "metrics": ["Recall", "NDCG", "Hit"],
        "topk": [20, 50],
        "valid_metric": "Recall@50",
        "show_progress": False,
        "state": "ERROR",
        **extra,
    }


def split(data_path, tmp_path, **extra):
    config = Config(
        model="SASRec", dataset="hand", config_dict=comirec_config(data_path, tmp_path, **extra)
    )
    return config, data_preparation(config, create_dataset(config))


def tokens(dataset, field, ids):
    return [str(t) for t in dataset.id2token(field, np.asarray(ids))]


def test_comirec_split_gives_the_defined_users_histories_and_targets(hand_made, tmp_path):
    config, (train, valid, test) = split(hand_made, tmp_path)
    dataset = train._dataset
    uid, iid = dataset.uid_field, dataset.iid_field
    users = {
        name: set(tokens(dataset, uid, part._dataset.inter_feat[uid].numpy()))
        for name, part in (("train", train), ("valid", valid), ("test", test))
    }
    # 8:1:1 over users, disjoint, every user in one part; validation and test users never train
    assert [len(users[p]) for p in ("train", "valid", "test")] == [16, 2, 2]
    assert set.union(*users.values()) == {str(u) for u in range(1, N_USERS + 1)}
    assert not users["train"] & (users["valid"] | users["test"])
    assert not users["valid"] & users["test"]
    # the user shuffle is fixed (ComiRec's seed), not the training seed's
    _, (_, other_valid, _) = split(hand_made, tmp_path, seed=7)
    other = set(tokens(dataset, uid, other_valid._dataset.inter_feat[uid].numpy()))
    assert other == users["valid"] and COMIREC_SPLIT_SEED == 1230

    # a training user's every prefix is a sample: n - 1 rows per user
    train_users = tokens(dataset, uid, train._dataset.inter_feat[uid].numpy())
    assert sorted(train_users) == sorted(
        u for u in users["train"] for _ in range(LENGTHS[int(u) - 1] - 1)
    )

    limit = config["MAX_ITEM_LIST_LENGTH"]
    for loader in (valid, test):
        part = loader._dataset
        rows = 0
        for batch in loader:
            interaction, _, positive_u, positive_i = batch
            for row in range(len(interaction)):
                user = tokens(dataset, uid, interaction[uid][row : row + 1])[0]
                items = sequence(user)
                k = int(len(items) * 0.8)  # ComiRec: the first 80 % are the history
                length = int(interaction["item_length"][row])
                history = tokens(dataset, iid, interaction["item_id_list"][row, :length])
                assert history == items[:k][-limit:]  # the model reads the last ones
                targets = tokens(dataset, iid, positive_i[positive_u == row])
                assert targets == items[k:] and len(targets) >= 1
                full = tokens(dataset, iid, part.eval_history.items_of(rows + row))
                assert full == items[:k]  # what mask_history would remove: all of it
            rows += len(interaction)
        assert rows == len(part.inter_feat) == 2
        assert isinstance(loader, MultiTargetEvalDataLoader)


def test_comirec_metrics_count_every_target(hand_made, tmp_path):
    """A model that ranks a fixed list of items first: Recall, NDCG and Hit as defined."""
    config = Config(model="SASRec", dataset="hand", config_dict=comirec_config(hand_made, tmp_path))
    _, model, trainer, (_, _, test) = _build(config)
    dataset = test._dataset
    first = ["s1", "s2"] + [f"{u}x{p}" for u in range(1, N_USERS + 1) for p in range(30)]
    first = [t for t in first if t in dataset.field2token_id[dataset.iid_field]]
    order = dataset.token2id(dataset.iid_field, first)
    scores = torch.full((dataset.item_num,), -1.0)
    scores[torch.as_tensor(order)] = -torch.arange(len(order), dtype=torch.float) / len(order)
    model.full_sort_predict = lambda interaction: scores.expand(len(interaction), -1).clone()
    result = trainer.evaluate(test, load_best_model=False)

    ranked = [t for t in first]  # the ranking of every row (index 0 is never ranked)
    expected = {f"{m}@{k}": [] for m in ("recall", "ndcg", "hit") for k in (20, 50)}
    for user in tokens(dataset, dataset.uid_field, dataset.inter_feat[dataset.uid_field]):
        items = sequence(user)
        targets = set(items[int(len(items) * 0.8) :])
        for k in (20, 50):
            hits = [i for i, item in enumerate(ranked[:k]) if item in targets]
            ideal = sum(1 / np.log2(i + 2) for i in range(min(len(targets), k)))
            expected[f"recall@{k}"].append(len(hits) / len(targets))
            expected[f"ndcg@{k}"].append(sum(1 / np.log2(i + 2) for i in hits) / ideal)
            expected[f"hit@{k}"].append(float(bool(hits)))
    for name, values in expected.items():
        assert result[name] == pytest.approx(round(float(np.mean(values)), 4), abs=1e-4), name
    assert 0 < result["recall@50"] < 1  # a test user's targets are partly in the top 50


def test_comirec_trains_any_sequential_model_and_masks_the_whole_history(hand_made, tmp_path):
    for model in ("SASRec", "GRU4Rec"):
        result = run_recbole_llm(
            model=model,
            dataset="hand",
            config_dict=comirec_config(hand_made, tmp_path, mask_history=True),
            saved=False,
        )
        test = result["test_result"]
        assert set(test) >= {"recall@20", "ndcg@50", "hit@50", "masked_recall@50"}
        assert all(0 <= v <= 1 for v in test.values())


def test_comirec_refuses_what_it_cannot_evaluate(hand_made, tmp_path, synthetic_root):
    with pytest.raises(UserError, match="not a sequential model"):
        split_config = comirec_config(hand_made, tmp_path)
        config = Config(model="BPR", dataset="hand", config_dict=split_config)
        data_preparation(config, create_dataset(config))
    with pytest.raises(UserError, match="eval_protocol must be one of"):
        split(hand_made, tmp_path, eval_protocol="paper")


def test_eimf_under_comirec_prompts_training_users_only(semantic_config):
    """Under the ComiRec protocol EIMF's semantic step reads the protocol's training users'
    whole sequences, exactly what trains, and no validation or test user; the manifest records
    the protocol (a setting left out at its default, so files made before stay current)."""
    from recbole_llm.semantic_step import plain_dataset
    from recbole_llm.semantics.history import split_training_histories, training_histories
    from recbole_llm.semantics.settings import settings

    config_dict = dict(
        semantic_config, interest_source="categories", hidden_size=16, eval_protocol="comirec"
    )
    config = Config(model="EIMF", dataset="synth", config_dict=config_dict)
    histories = split_training_histories(plain_dataset(config))
    train, valid, test = data_preparation(config, create_dataset(config))
    assert dict(histories) == dict(training_histories(train._dataset))
    dataset = train._dataset
    held_out = {
        str(t)
        for part in (valid, test)
        for t in dataset.id2token(dataset.uid_field, part._dataset.inter_feat[dataset.uid_field])
    }
    assert held_out and not held_out & set(histories)
    assert settings(config, "eimf")["eval_protocol"] == "comirec"
    default = Config(
        model="EIMF", dataset="synth", config_dict=dict(config_dict, eval_protocol="recbole")
    )
    assert "eval_protocol" not in settings(default, "eimf")

    result = run_recbole_llm(model="EIMF", dataset="synth", config_dict=config_dict, saved=False)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_comirec_histories_order_ties_as_recbole_does(tmp_path):
    """Timestamps that differ in float64 but not in RecBole's float32 (ties, kept in file
    order): the semantic step's ComiRec histories are exactly the sequences that train."""
    from recbole_llm.semantic_step import plain_dataset
    from recbole_llm.semantics.history import comirec_training_histories, training_histories

    folder = tmp_path / "data" / "tied"
    os.makedirs(folder)
    with open(folder / "tied.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, 21):
            items = [f"{user}x{step}" for step in range(6)]
            # later in time but earlier in the file: 10 s apart, one float32 value at 1e9
            for step in (1, 0, 3, 2, 5, 4):
                f.write(f"{user}\t{items[step]}\t{1_000_000_000 + 10 * step}\n")
    config = Config(
        model="SASRec",
        dataset="tied",
        config_dict=comirec_config(str(tmp_path / "data"), tmp_path, save_dataset=False),
    )
    histories = comirec_training_histories(plain_dataset(config))
    train, _, _ = data_preparation(config, create_dataset(config))
    assert dict(histories) == dict(training_histories(train._dataset)) and len(histories) == 16


def test_test_every_epoch_records_each_epoch_and_changes_nothing_else(
    fast_config, tmp_path, monkeypatch
):
    from test_trainer import run

    config = dict(fast_config, epochs=3, stopping_step=10, hidden_dropout_prob=0.3)
    plain, _ = run("SASRec", dict(config, checkpoint_dir=str(tmp_path / "a")))
    paper, _ = run(
        "SASRec", dict(config, test_every_epoch=True, checkpoint_dir=str(tmp_path / "b"))
    )
    # the same training and the same checkpoint: only the test is also evaluated each epoch
    assert paper["best_valid_result"] == plain["best_valid_result"]
    assert paper["test_result"] == plain["test_result"] and "epoch_test_results" not in plain
    epochs = paper["epoch_test_results"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    scores = [e["valid_score"] for e in epochs]
    best = scores.index(max(scores))  # the checkpoint: the first epoch with the best validation
    assert {k: epochs[best][k] for k in paper["test_result"]} == dict(paper["test_result"])

    # interrupted after two epochs and resumed: the same three epochs' test metrics
    resumable = dict(config, test_every_epoch=True, training_state_file=str(tmp_path / "state.pth"))
    run("SASRec", dict(resumable, checkpoint_dir=str(tmp_path / "c")), 2, monkeypatch)
    resumed, trainer = run("SASRec", dict(resumable, checkpoint_dir=str(tmp_path / "d")))
    assert trainer.resumed_at == [2] and resumed["epoch_test_results"] == epochs


def test_paper_mode_report_shows_the_best_test_epoch_beside_ours(tmp_path):
    import yaml

    from recbole_llm.bench.report import render_report
    from recbole_llm.bench.suite import SuiteError, load_suite

    path = tmp_path / "suite.yaml"
    suite = {
        "name": "paper",
        "dataset": "ml-100k-session",
        "seeds": [1, 2],
        "runs": ["SRGNN"],
        "report": {"metrics": ["hit", "mrr"], "topk": [5], "paper_mode": True},
    }
    path.write_text(yaml.safe_dump(suite))
    loaded = load_suite(str(path))

    def row(test, epochs):
        return {"test": test, "epoch_test": epochs, "epochs": len(epochs), "seconds_per_epoch": 1}

    rows = {
        ("SRGNN", 1): row(
            {"hit@5": 0.30, "mrr@5": 0.10},
            [{"epoch": 0, "hit@5": 0.20, "mrr@5": 0.14}, {"epoch": 1, "hit@5": 0.34, "mrr@5": 0.1}],
        ),
        ("SRGNN", 2): row(
            {"hit@5": 0.28, "mrr@5": 0.12},
            [
                {"epoch": 0, "hit@5": 0.32, "mrr@5": 0.12},
                {"epoch": 1, "hit@5": 0.30, "mrr@5": 0.16},
            ],
        ),
    }
    text = render_report(loaded, rows)
    section = text.split("## Paper mode")[1]
    assert "selects on the test set" in section
    (line,) = [line for line in section.splitlines() if line.startswith("| SRGNN")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    # best per metric over epochs (each from its own epoch), then ours, mean ± std over seeds
    assert cells[1:5] == [
        "0.3300 ± 0.0141",
        "0.2900 ± 0.0141",
        "0.1500 ± 0.0141",
        "0.1100 ± 0.0141",
    ]
    assert cells[5] == "2/2"
    suite["report"]["split"] = "valid"
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(SuiteError, match="paper_mode"):
        load_suite(str(path))
