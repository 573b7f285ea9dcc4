"""LLM4SBR: backbone views, intents as inputs, its losses, and the whole pipeline."""

import re

import pytest
import torch
import torch.nn.functional as F
from synthetic import SESSION_FORMAT

from recbole_llm.config import Config
from recbole_llm.data.utils import data_preparation
from recbole_llm.quick_start import create_dataset, run_recbole_llm
from recbole_llm.registry import get_model, get_trainer

BACKBONES = ["SRGNN", "GRU4Rec", "SASRec", "NARM", "STAMP", "GCSAN", "TAGNN", "GCEGNN", "DHCN"]


@pytest.fixture(scope="module")
def session_root(tmp_path_factory):
    """Synthetic sessions, with semantics and caches shared by this module's tests."""
    from synthetic import write_synthetic_sessions

    root = tmp_path_factory.mktemp("sessions")
    write_synthetic_sessions(str(root))
    return str(root)


@pytest.fixture
def session_config(session_root, tiny_llm, tmp_path):
    return {
        "data_path": session_root,
        **SESSION_FORMAT,
        "MAX_ITEM_LIST_LENGTH": 50,
        "text_fields": ["movie_title", "class"],
        "llm_model": tiny_llm,
        "llm_max_new_tokens": 6,
        "prompt_max_items": 4,
        "semantics_cache_dir": session_root + "/cache",
        "semantics_dir": session_root + "/semantics",
        "embedding_size": 16,
        "hidden_size": 16,
        "n_layers": 1,
        "n_heads": 2,
        "inner_size": 32,
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": False,
        "state": "ERROR",
    }


def build(config_dict):
    config = Config(model="LLM4SBR", dataset="synth-session", config_dict=config_dict)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(0)
    return config, get_model("LLM4SBR")(config, train._dataset), train, valid, test


@pytest.mark.parametrize("backbone", BACKBONES)
def test_views_have_the_right_shape_and_ignore_padding(backbone, session_config):
    _, model, train, _, _ = build(dict(session_config, backbone=backbone))
    model.eval()
    batch = next(iter(train))
    item_seq, item_seq_len = batch["item_id_list"], batch["item_length"]
    assert (item_seq_len < item_seq.size(1)).any()
    junk = item_seq.clone()
    padded = torch.arange(item_seq.size(1)).unsqueeze(0) >= item_seq_len.unsqueeze(1)
    junk[padded] = torch.randint(1, model.n_items, (int(padded.sum()),))
    with torch.no_grad():
        clean, dirty = model._views(item_seq, item_seq_len), model._views(junk, item_seq_len)
    size = 16
    for view in ("short", "long"):
        assert tuple(clean[view].shape) == (len(item_seq), size)
        assert torch.allclose(clean[view], dirty[view], atol=1e-6), view


def starts_as_backbone(model, batch):
    """Assert that ``model`` (eval mode) scores ``batch`` exactly as its backbone, by full
    ranking and by ``predict`` on random items (put into ``batch``); returns the full scores."""
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        # TAGNN's per-candidate term included: LLM4SBR-TAGNN scores exactly as TAGNN
        assert torch.allclose(scores, model.backbone.full_sort_predict(batch), atol=1e-5)
        batch.interaction["item_id"] = torch.randint(1, model.n_items, (len(scores),))
        assert torch.allclose(model.predict(batch), model.backbone.predict(batch), atol=1e-5)
    return scores


@pytest.mark.parametrize("backbone", BACKBONES)
def test_residual_fusion_starts_as_its_backbone(backbone, session_config):
    # SR-GNN's own pooling is the unnormalised sum; the others' combination ignores the pool
    config = dict(session_config, backbone=backbone, global_pool="sum", fusion="residual")
    _, model, _, _, test = build(config)
    model.eval()
    batch = next(iter(test))[0]
    scores = starts_as_backbone(model, batch)
    with torch.no_grad():
        # intents enter through zero-initialised weights: none yet at the start ...
        batch.interaction["long_intent"] = batch["long_intent"].flip(0)
        assert torch.allclose(model.full_sort_predict(batch), scores, atol=1e-6)
    # ... but the gradient reaches those weights, so they are learned in
    model.train()
    model.calculate_loss(next(iter(test))[0])[0].backward()
    assert model.intent_residual.weight.grad.abs().sum() > 0
    assert model.view_residual.weight.grad.abs().sum() > 0
    # each backbone's own vector uses its local view, but GCE-GNN's and DHCN's score with their
    # global view alone: there the local view enters through W, zero at the start
    gated = "long" if backbone in ("GCEGNN", "DHCN") else "short"
    assert model.gates[gated].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["SASRec", "SRGNN", "TAGNN"])
def test_additive_fusion_starts_as_its_backbone_and_learns_only_the_intents(
    backbone, session_config
):
    # SR-GNN's own pooling is the unnormalised sum (as in the residual test above)
    config = dict(session_config, backbone=backbone, fusion="additive", global_pool="sum")
    _, model, _, _, test = build(config)
    assert not hasattr(model, "gates") and not hasattr(model, "view_residual")
    model.eval()
    batch = next(iter(test))[0]
    starts_as_backbone(model, batch)
    model.train()
    model.calculate_loss(batch)[0].backward()
    assert model.intent_residual.weight.grad.abs().sum() > 0
    # once U is learned in, the intents move the scores: another session's change them
    model.eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.intent_residual.weight)
        scores = model.full_sort_predict(batch)
        batch.interaction["long_intent"] = batch["long_intent"].flip(0)
        assert not torch.allclose(model.full_sort_predict(batch), scores)


@pytest.mark.parametrize("backbone", ["SASRec", "TAGNN"])
def test_score_fusion_starts_as_its_backbone_and_weighs_the_intents_text(backbone, session_config):
    _, model, _, _, test = build(dict(session_config, backbone=backbone, fusion="score"))
    model.eval()
    batch = next(iter(test))[0]
    starts_as_backbone(model, batch)
    model.train()
    model.calculate_loss(batch)[0].backward()
    assert (model.intent_weight.grad.abs() > 0).all()
    model.eval()
    with torch.no_grad():
        model.intent_weight.fill_(1.0)
        scores = model.full_sort_predict(batch)
        # the term: each candidate's standardised text cosine to the intent, in units of the
        # backbone's own spread, so an item whose text is the intent gains the most
        extra = scores - model.backbone.full_sort_predict(batch)
        text = F.normalize(model.item_text, dim=1)
        expected = 0
        for view in model.views:
            cosine = F.normalize(batch[f"{view}_intent"], dim=1) @ text.T
            rest = cosine[:, 1:]
            expected = expected + (cosine - rest.mean(1, keepdim=True)) / rest.std(1, keepdim=True)
        spread = model.backbone.full_sort_predict(batch)[:, 1:].std(dim=1, keepdim=True)
        assert torch.allclose(extra, expected * spread, atol=1e-3)
        assert torch.allclose(
            model.predict(batch), scores.gather(1, batch["item_id"].unsqueeze(1)).squeeze(1)
        )
        batch.interaction["long_intent"] = batch["long_intent"].flip(0)
        assert not torch.allclose(model.full_sort_predict(batch), scores)
        # the shuffled control draws one permutation a batch, for the text term as for the rest
        model.intent_control, model.control_phase = "shuffle", "both"
        model._shuffle_generator.manual_seed(7)
        model.full_sort_predict(batch)
        once = torch.Generator().manual_seed(7)
        torch.randperm(len(scores), generator=once)
        assert torch.equal(model._shuffle_generator.get_state(), once.get_state())


def test_global_pool_softmax_is_a_weighted_mean_over_real_positions():
    from recbole_llm.model.session_views import pool_states

    states = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    alpha = torch.randn(3, 5, 1)
    pooled = pool_states(alpha, states, mask, "softmax")
    weights = torch.softmax(alpha[0, :2], dim=0)
    assert torch.allclose(pooled[0], (weights * states[0, :2]).sum(dim=0), atol=1e-6)
    assert torch.allclose(pooled[2], states[2, 0], atol=1e-6)  # one real position: itself
    # a long session's pooled norm no longer grows with its length
    long = pool_states(
        torch.ones(1, 50, 1), torch.ones(1, 50, 4), torch.ones(1, 50).bool(), "softmax"
    )
    assert torch.allclose(long, torch.ones(1, 4))


def test_intents_reach_the_scores_and_tau_zero_leaves_the_cross_entropy(session_config):
    _, model, train, _, test = build(dict(session_config, intent_loss_weight=0.0, fusion="paper"))
    model.eval()
    batch = next(iter(test))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        batch.interaction["long_intent"] = batch["long_intent"].flip(0)
        assert not torch.allclose(model.full_sort_predict(batch), scores)
    train_batch = next(iter(train))
    loss = model.calculate_loss(train_batch)
    logits = model.forward(train_batch) @ model.backbone.item_embedding.weight.T
    logits[:, 0] = float("-inf")
    assert torch.equal(loss, F.cross_entropy(logits, train_batch["item_id"]))


def test_alignment_loss_falls_over_epochs(session_config):
    config, model, train, _, _ = build(dict(session_config, backbone="GRU4Rec", learning_rate=0.01))
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    au = [trainer._train_epoch(train, epoch)[1] for epoch in range(4)]
    assert au[-1] < au[0]


def test_normal_view_ablation_and_the_llm_free_control(session_config):
    normal = dict(
        session_config,
        intent_views=["normal"],
        semantics_dir=session_config["semantics_dir"] + "-n",
    )
    _, model, train, _, _ = build(normal)
    assert model.views == ["normal"] and model.session_views is None
    assert "normal_intent" in next(iter(train)).interaction
    control = dict(
        session_config,
        intent_source="last_item",
        semantics_dir=session_config["semantics_dir"] + "-c",
    )
    result = run_recbole_llm(
        model="LLM4SBR", dataset="synth-session", config_dict=control, saved=False
    )
    assert all(0 <= v <= 1 for v in result["test_result"].values())


@pytest.mark.parametrize("backbone", ["SRGNN", "NARM"])
def test_end_to_end_with_the_tiny_llm(backbone, session_config):
    result = run_recbole_llm(
        model="LLM4SBR",
        dataset="synth-session",
        config_dict=dict(session_config, backbone=backbone),
        saved=True,
    )
    assert all(0 <= v <= 1 for v in result["test_result"].values())


def test_log_names_the_losses_and_says_uniformity_is_negative(session_config):
    config, model, train, _, _ = build(dict(session_config, intent_loss_weight=1.0))
    with torch.no_grad():
        losses = model.calculate_loss(next(iter(train)))
    assert model.loss_names[:2] == ("rec", "align_uniformity") and len(losses) == len(
        model.loss_names
    )
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    notes = []
    trainer.logger.info = notes.append
    line = trainer._generate_train_loss_output(0, 0.0, 1.0, tuple(float(x) for x in losses))
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert "align_uniformity: " in line and "train_loss" not in line
    (note,) = notes
    assert "negative by design" in note
    trainer._generate_train_loss_output(1, 0.0, 1.0, tuple(float(x) for x in losses))
    assert len(notes) == 1, "the note is logged once"
