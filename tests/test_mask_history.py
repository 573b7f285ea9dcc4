"""``mask_history``: one evaluation pass ranks with and without each sample's earlier items.

The ``popular_first`` data makes masking visible: every user first watches the same five
popular items, then three items of its own, then six shared "tier" items in a rotation of its
own (its last two are its validation and test targets). A popularity ranking puts the history
at the top; without it, the targets.
"""

import os

import numpy as np
import pytest
import torch
from recbole.utils import init_seed

from recbole_llm.config import Config
from recbole_llm.data.utils import EvalHistory
from recbole_llm.quick_start import _build, objective_function

POPULAR = ["1", "2", "3", "4", "5"]
TIER = ["6", "7", "8", "9", "10", "11"]
N_USERS = 12
REPEAT_USER = str(N_USERS)  # the only user with a repeat: its last item is a popular one


def popular_first_sequences():
    """user -> its items in time order (repeat-free but for REPEAT_USER's last item)."""
    rng = np.random.default_rng(0)
    sequences = {}
    for user in range(1, N_USERS + 1):
        own = [str(100 + 3 * user + k) for k in range(3)]
        tier = TIER[user % 6 :] + TIER[: user % 6]
        sequences[str(user)] = [str(i) for i in rng.permutation(POPULAR)] + own + tier
    sequences[REPEAT_USER][-1] = POPULAR[2]
    return sequences


@pytest.fixture
def popular_first(tmp_path):
    """Data root with ``popular_first``: .inter only, distinct timestamps per user."""
    folder = tmp_path / "data" / "popular_first"
    os.makedirs(folder)
    with open(folder / "popular_first.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in popular_first_sequences().items():
            for step, item in enumerate(items):
                f.write(f"{user}\t{item}\t{1_000_000 * int(user) + 60 * step}\n")
    return str(tmp_path / "data")


def masking_config(data_path, tmp_path, **extra):
    config = {
        "data_path": data_path,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 5,  # several batches per evaluation
        "MAX_ITEM_LIST_LENGTH": 3,  # shorter than every history
        "embedding_size": 8,
        "hidden_size": 8,
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "metrics": ["Recall", "NDCG"],
        "topk": [5],
        "valid_metric": "NDCG@5",
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "mask_history": True,
    }
    config.update(extra)
    return config


def built(model, config_dict):
    config = Config(model=model, dataset="popular_first", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    return _build(config)


def tokens(dataset, ids):
    return {str(t) for t in dataset.id2token(dataset.iid_field, np.asarray(ids))}


def test_the_history_is_every_earlier_item_not_only_the_item_list(popular_first, tmp_path):
    dataset, _, _, (_, valid, test) = built("SASRec", masking_config(popular_first, tmp_path))
    sequences = popular_first_sequences()
    for loader, offset in ((valid, 2), (test, 1)):  # leave-one-out: valid, then test target
        inter = loader._dataset.inter_feat
        users = dataset.id2token(dataset.uid_field, inter[dataset.uid_field].numpy())
        assert len(loader.eval_history) == len(users) == N_USERS
        for row, user in enumerate(users):
            items = sequences[str(user)]
            target = items[-offset]
            history = tokens(dataset, loader.eval_history.items_of(row))
            assert history == set(items[: len(items) - offset])  # all of them, not 3
            assert tokens(dataset, [inter[dataset.iid_field][row]]) == {target}
            if str(user) != REPEAT_USER or offset == 2:
                assert target not in history  # repeat-free: a target is never history
            else:
                assert target in history  # a repeat: kept unmasked by the trainer


def capture_scores(collector):
    """Record every score matrix a collector is given."""
    seen = []
    collect = collector.eval_batch_collect

    def recording(scores, *args):
        seen.append(scores.clone())
        return collect(scores, *args)

    collector.eval_batch_collect = recording
    return seen


def test_masked_top_k_never_holds_history_and_unmasked_does(popular_first, tmp_path):
    """A sequential model (SASRec's trainer and loaders) scoring by popularity."""
    dataset, model, trainer, (_, _, test) = built("SASRec", masking_config(popular_first, tmp_path))
    popularity = torch.bincount(
        torch.as_tensor(dataset.inter_feat[dataset.iid_field]), minlength=dataset.item_num
    ).float()
    popularity += torch.linspace(0, 0.5, dataset.item_num)  # no ties
    model.full_sort_predict = lambda interaction: popularity.repeat(len(interaction), 1)
    unmasked = capture_scores(trainer.eval_collector)
    masked = capture_scores(trainer.masked_collector)
    result = trainer.evaluate(test, load_best_model=False)

    unmasked, masked = torch.cat(unmasked), torch.cat(masked)
    inter = test._dataset.inter_feat
    targets = inter[dataset.iid_field]
    for row in range(len(inter)):
        history = set(test.eval_history.items_of(row).tolist()) - {int(targets[row])}
        assert set(masked[row].topk(5).indices.tolist()).isdisjoint(history)
        assert set(unmasked[row].topk(5).indices.tolist()) & history
        assert masked[row, targets[row]] == unmasked[row, targets[row]]  # targets stay
    assert torch.isfinite(masked[:, 1:]).sum() < torch.isfinite(unmasked[:, 1:]).sum()
    # the repeat user's target is a popular item it had seen: ranked, not masked
    assert result["masked_recall@5"] > result["recall@5"]
    per_user = trainer.per_user_metrics()
    assert set(per_user) == {"recall@5", "ndcg@5", "masked_recall@5", "masked_ndcg@5"}
    assert np.isclose(per_user["masked_ndcg@5"].mean(), result["masked_ndcg@5"], atol=1e-4)
    assert np.isclose(per_user["ndcg@5"].mean(), result["ndcg@5"], atol=1e-4)


def test_both_rankings_come_from_one_run_and_unmasked_is_recboles(popular_first, tmp_path):
    """SASRec through the real pipeline, early stopping on a masked metric."""
    common = dict(model="SASRec", dataset="popular_first")
    plain = objective_function(
        dict(masking_config(popular_first, tmp_path, mask_history=False), **common)
    )
    masked = objective_function(
        dict(masking_config(popular_first, tmp_path, valid_metric="masked_NDCG@5"), **common)
    )
    for split in ("best_valid_result", "test_result"):
        both, alone = dict(masked[split]), dict(plain[split])
        assert set(alone) == {"recall@5", "ndcg@5"}
        assert set(both) == set(alone) | {f"masked_{key}" for key in alone}
        assert {k: both[k] for k in alone} == alone  # RecBole's numbers, unchanged
    assert masked["best_valid_score"] == masked["best_valid_result"]["masked_ndcg@5"]


def test_general_models_mask_what_recbole_masks(popular_first, tmp_path):
    """Pop: RecBole masks the training items itself (masked keys repeat its values), except
    with ``repeatable: True``, where only our masked ranking leaves them out."""
    recbole_masks = built("Pop", masking_config(popular_first, tmp_path))
    _, _, trainer, (train, valid, test) = recbole_masks
    trainer.fit(train, valid, saved=False, verbose=False)
    result = trainer.evaluate(test, load_best_model=False)
    assert result["recall@5"] > 0
    assert all(result[f"masked_{k}"] == result[k] for k in ("recall@5", "ndcg@5"))

    _, _, trainer, (train, valid, test) = built(
        "Pop", masking_config(popular_first, tmp_path, repeatable=True)
    )
    trainer.fit(train, valid, saved=False, verbose=False)
    result = trainer.evaluate(test, load_best_model=False)
    assert result["recall@5"] < result["masked_recall@5"]
    per_user = trainer.per_user_metrics()
    assert len(per_user["masked_recall@5"]) == len(per_user["recall@5"]) == N_USERS


def test_a_session_history_is_the_session_before_its_target(tmp_path, fast_config):
    from synthetic import write_synthetic_sessions

    write_synthetic_sessions(str(tmp_path / "sessions"), name="synth-session")
    config = Config(
        model="GRU4Rec",
        dataset="synth-session",
        config_dict=dict(
            fast_config,
            data_path=str(tmp_path / "sessions"),
            load_col={"inter": ["session_id", "item_id_list", "item_id"]},
            USER_ID_FIELD="session_id",
            alias_of_item_id=["item_id_list"],
            benchmark_filename=["train", "valid", "test"],
            mask_history=True,
        ),
    )
    dataset, _, trainer, (_, valid, test) = _build(config)
    for loader in (valid, test):
        inter = loader._dataset.inter_feat
        lists, lengths = inter[dataset.item_id_list_field], inter[dataset.item_list_length_field]
        for row in range(len(inter)):
            history = loader.eval_history.items_of(row)
            assert sorted(history.tolist()) == sorted(lists[row, : lengths[row]].tolist())
    result = trainer.evaluate(test, load_best_model=False)
    assert "masked_ndcg@10" in result and "ndcg@10" in result


def test_masked_names_and_modes_are_checked(popular_first, tmp_path):
    with pytest.raises(ValueError, match="set mask_history: True"):
        Config(
            model="SASRec",
            dataset="popular_first",
            config_dict=masking_config(
                popular_first, tmp_path, mask_history=False, valid_metric="masked_NDCG@5"
            ),
        )
    sampled = dict(masking_config(popular_first, tmp_path)["eval_args"], mode="uni100")
    with pytest.raises(ValueError, match="full-ranking evaluation only"):
        built("SASRec", masking_config(popular_first, tmp_path, eval_args=sampled))


def test_without_mask_history_nothing_changes(popular_first, tmp_path):
    _, _, trainer, (train, valid, test) = built(
        "SASRec", masking_config(popular_first, tmp_path, mask_history=False)
    )
    assert trainer.masked_evaluator is None and not hasattr(test, "eval_history")
    result = trainer.evaluate(test, load_best_model=False)
    assert set(result) == {"recall@5", "ndcg@5"}
    assert set(trainer.per_user_metrics()) == {"recall@5", "ndcg@5"}


def test_eval_history_indexes_a_batch():
    history = EvalHistory(items=[7, 8, 9, 4], start=[0, 3, 3], end=[3, 3, 4], by_user=False)
    rows, items = history.index([2, 0, 1])
    assert rows.tolist() == [0, 1, 1, 1]
    assert items.tolist() == [4, 7, 8, 9]


@pytest.mark.parametrize(
    "metrics", [["Recall", "NDCG", "MRR", "Hit", "Precision"], ["NDCG", "AveragePopularity"]]
)
def test_topk_collector_collects_what_recboles_collector_does(fast_config, metrics):
    """Our sparse ``rec.topk`` is RecBole's dense one, value for value and dtype, with tied
    scores, repeated positive pairs, rows without positives and other resources beside it."""
    from recbole.evaluator import Collector

    from recbole_llm.evaluator import TopkCollector

    config = Config(
        model="SASRec",
        dataset="synth",
        config_dict=dict(fast_config, metrics=metrics, topk=[3, 10], valid_metric="NDCG@10"),
    )
    generator = torch.Generator().manual_seed(0)
    ours, recboles = TopkCollector(config), Collector(config)
    for rows in (7, 5):
        scores = torch.randint(0, 6, (rows, 40), generator=generator).float()  # many ties
        scores[:, 0] = -np.inf
        positive_u = torch.tensor([0, 0, 0, 2, 3, 3, rows - 1])
        positive_i = torch.tensor([5, 9, 5, 1, 39, 2, 7])  # (0, 5) twice; row 1 has none
        for collector in (ours, recboles):
            collector.eval_batch_collect(scores, None, positive_u, positive_i)
    for key in recboles.data_struct._data_dict:
        expected, got = recboles.data_struct.get(key), ours.data_struct.get(key)
        assert got.dtype == expected.dtype and torch.equal(got, expected), key
    assert "rec.topk" in recboles.data_struct._data_dict
