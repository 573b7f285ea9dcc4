"""Compact intents: top-r item ids and weights on disk, the same vectors in every batch."""

import json
import os

import numpy as np
import pytest
import torch
from synthetic import SESSION_FORMAT

from recbole_llm.config import Config
from recbole_llm.fields import intent_field
from recbole_llm.quick_start import create_dataset
from recbole_llm.semantics import files
from recbole_llm.semantics.intents import localise, top_items


def test_top_items_rebuild_the_localised_vectors():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 16)).astype(np.float32)
    answers = rng.normal(size=(7, 16)).astype(np.float32)
    for aggregation in ("sum", "mean"):
        top, weights = top_items(answers, items, 5, aggregation)
        assert top.shape == weights.shape == (7, 5)
        rebuilt = (weights[:, :, None] * items[top]).sum(axis=1)
        assert np.allclose(rebuilt, localise(answers, items, 5, aggregation), atol=1e-5)
        best = np.argsort(-(answers @ items.T), axis=1)[:, :5]
        assert (np.sort(top, axis=1) == np.sort(best, axis=1)).all()
    # fewer items than topr: every item, once
    assert top_items(answers, items[:3], 5, "sum")[0].shape == (7, 3)


@pytest.fixture(scope="module")
def session_root(tmp_path_factory):
    from synthetic import write_synthetic_sessions

    root = tmp_path_factory.mktemp("sessions")
    write_synthetic_sessions(str(root))
    return str(root)


def session_config(root, tiny_llm, form):
    return {
        "data_path": root,
        **SESSION_FORMAT,
        "text_fields": ["movie_title", "class"],
        "llm_model": tiny_llm,
        "llm_max_new_tokens": 6,
        "prompt_max_items": 4,
        "semantics_cache_dir": root + "/cache",
        "semantics_dir": f"{root}/semantics-{form}",
        "intent_form": form,
        "show_progress": False,
        "state": "ERROR",
    }


def dataset_of(root, tiny_llm, form, **extra):
    config = Config(
        model="LLM4SBR",
        dataset="synth-session",
        config_dict=dict(session_config(root, tiny_llm, form), **extra),
    )
    return config, create_dataset(config)


def every_intent(dataset):
    sessions = torch.arange(dataset.user_num)
    return {view: dataset.intents(intent_field(view), sessions) for view in dataset.intent_views}


def test_compact_and_dense_files_give_the_same_batches(session_root, tiny_llm):
    dense_config, dense = dataset_of(session_root, tiny_llm, "dense")
    compact_config, compact = dataset_of(session_root, tiny_llm, "compact")
    name = "synth-session.intent"
    assert compact.semantics_manifest["files"][name]["form"] == "compact"
    assert dense.semantics_manifest["files"][name]["form"] == "dense"

    want, got = every_intent(dense), every_intent(compact)
    for view in dense.intent_views:
        assert got[view].shape == want[view].shape == (dense.user_num, 384)
        assert torch.allclose(got[view], want[view], atol=1e-5), view
        assert got[view][1:].norm(dim=1).min() > 0  # every sample has an intent
        assert (got[view][0] == 0).all()  # the padding session has none
        assert torch.allclose(compact.mean_intents()[view], dense.mean_intents()[view], atol=1e-5)
    # the intents differ between sessions, so equality above is not trivial
    assert (want["long"][1:] - want["long"][1:].mean(dim=0)).abs().max() > 1e-3

    # a batch carries the rebuilt vectors, as a dense file's batch does
    compact_train, dense_train = compact.build()[0], dense.build()[0]
    joined = compact_train.join(compact_train.inter_feat[:8])
    plain = dense_train.join(dense_train.inter_feat[:8])
    assert torch.allclose(joined["long_intent"], plain["long_intent"], atol=1e-5)

    dense_size = os.path.getsize(files.file_path(dense_config, "intent"))
    compact_size = os.path.getsize(files.file_path(compact_config, "intent"))
    assert compact_size * 15 < dense_size, (compact_size, dense_size)


def test_dense_files_made_before_the_compact_form_stay_readable(session_root, tiny_llm):
    config, dense = dataset_of(session_root, tiny_llm, "dense")
    path = files.manifest_path(config, "llm4sbr")
    manifest = json.load(open(path))
    del manifest["files"]["synth-session.intent"]["form"]  # as the format was before
    manifest["settings"].pop("intent_form")
    json.dump(manifest, open(path, "w"))
    assert files.intent_form(config, manifest) == "dense"
    files.attach_manifest(config, "llm4sbr", manifest)
    from recbole_llm.data.dataset import LLM4SBRDataset

    again = LLM4SBRDataset(config)
    assert torch.equal(every_intent(again)["long"], every_intent(dense)["long"])


def test_a_compact_file_with_a_wrong_row_names_it(session_root, tiny_llm, tmp_path):
    import shutil

    root = str(tmp_path / "data")
    shutil.copytree(session_root, root)
    config, _ = dataset_of(root, tiny_llm, "compact")
    path = files.file_path(config, "intent")
    lines = open(path).read().splitlines()
    cells = lines[3].split("\t")
    cells[1] = " ".join(cells[1].split()[:-1])  # one item fewer than weights
    lines[3] = "\t".join(cells)
    open(path, "w").write("\n".join(lines) + "\n")
    manifest = json.load(open(files.manifest_path(config, "llm4sbr")))
    manifest["files"]["synth-session.intent"]["sha256"] = files.file_sha256(path)
    files.attach_manifest(config, "llm4sbr", manifest)
    from recbole_llm.data.dataset import LLM4SBRDataset

    with pytest.raises(files.SemanticsError, match="row 3: long_intent has 4 items and 5"):
        LLM4SBRDataset(config)


def test_compact_needs_localised_intents(session_root, tiny_llm):
    with pytest.raises(files.SemanticsError, match="intent_topr: 0 .* set intent_form: dense"):
        dataset_of(session_root, tiny_llm, "compact", intent_topr=0)


@pytest.mark.parametrize("control", ["none", "shuffle", "mean"])
def test_fusion_scores_from_the_gram_table_equal_the_products(session_root, tiny_llm, control):
    from recbole.utils import init_seed

    from recbole_llm.data.utils import data_preparation
    from recbole_llm.model.llm4sbr import LLM4SBR

    config, dataset = dataset_of(
        session_root, tiny_llm, "compact", intent_control=control, backbone="GRU4Rec"
    )
    init_seed(config["seed"], True)
    train = data_preparation(config, dataset)[0]
    model = LLM4SBR(config, train.dataset).eval()  # no dropout: two passes compare
    assert model.text_gram is not None and model.text_gram.shape == (dataset.item_num,) * 2
    with torch.no_grad():
        model.intent_weight.fill_(1.0)  # the text term counts as much as the backbone
    batch = next(iter(train))
    assert batch["long_intent_items"].shape == batch["long_intent_weights"].shape

    def scores(gram):
        model.text_gram = gram
        model._shuffle_generator.manual_seed(7)  # the same draw for both
        with torch.no_grad():
            return model._all_scores(batch)[0]

    gram = model.text_gram
    from_gram, from_products = scores(gram), scores(None)
    assert torch.allclose(from_gram, from_products, atol=1e-4), control
    if control == "none":  # both are the fusion's definition, written out
        with torch.no_grad():
            model.intent_weight.fill_(0.0)
            backbone = scores(gram)
            model.intent_weight.copy_(torch.tensor([0.7, 1.3]))
        expected = backbone.clone()
        spread = backbone[:, 1:].std(dim=1, keepdim=True)
        texts = torch.nn.functional.normalize(model.item_text, dim=1)
        for weight, view in zip((0.7, 1.3), model.views):
            cosine = torch.nn.functional.normalize(batch[f"{view}_intent"], dim=1) @ texts.T
            real = cosine[:, 1:]
            standard = (cosine - real.mean(1, keepdim=True)) / (real.std(1, keepdim=True) + 1e-6)
            expected += weight * standard * spread
        assert torch.allclose(scores(gram), expected, atol=1e-4)
        assert torch.allclose(scores(None), expected, atol=1e-4)
    # the intents decide the scores: other sessions' items give other scores
    batch.update(type(batch)({"long_intent_items": batch["long_intent_items"].roll(1, dims=0)}))
    if control != "mean":
        assert not torch.allclose(scores(gram), from_gram, atol=1e-3)


def test_real_item_statistics_equal_torch_std_mean_without_the_padding_column():
    from recbole_llm.model.layers import real_item_std_mean

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 3001, generator=generator) * 0.05 + 0.4  # cosines: small spread
    scores[:, 0] = 50.0  # the padding column must not count
    std, mean, centred = real_item_std_mean(scores)
    want_std, want_mean = torch.std_mean(scores[:, 1:], dim=1, keepdim=True)
    assert torch.allclose(mean, want_mean, atol=1e-6)
    assert torch.allclose(std, want_std, rtol=1e-4)
    assert torch.allclose(centred, scores - want_mean, atol=1e-5)


def test_the_gram_table_is_kept_only_for_compact_intents_within_its_budget(
    session_root, tiny_llm, monkeypatch
):
    from recbole_llm.data.utils import data_preparation
    from recbole_llm.model import llm4sbr

    def model_of(form):
        config, dataset = dataset_of(session_root, tiny_llm, form, backbone="GRU4Rec")
        train = data_preparation(config, dataset)[0]
        return llm4sbr.LLM4SBR(config, train.dataset), train

    assert model_of("dense")[0].text_gram is None
    assert model_of("compact")[0].text_gram is not None
    monkeypatch.setattr(llm4sbr, "GRAM_MAX_BYTES", 0)
    model, train = model_of("compact")  # too many items: the products, same scores
    assert model.text_gram is None
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        model.intent_weight.fill_(1.0)
        beyond = model._all_scores(batch)[0]
        text = torch.as_tensor(train.dataset.item_text_matrix(), dtype=torch.float)
        model.text_gram = text @ model.item_text.T  # the table the model builds within budget
        within = model._all_scores(batch)[0]
    assert torch.allclose(beyond, within, atol=1e-4) and "long_intent_items" in batch
