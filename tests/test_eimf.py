"""EIMF: gradients of each loss, equality with its backbone at zero weights, behaviour-only
inference, and the whole pipeline through the command line."""

import glob
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import LOAD_TIMES, REPO

from recbole_llm.config import Config
from recbole_llm.data.utils import data_preparation
from recbole_llm.quick_start import create_dataset, load_data_and_model, run_recbole_llm
from recbole_llm.registry import get_model, get_trainer
from recbole_llm.semantics import files


def build(config_dict, model="EIMF"):
    config = Config(model=model, dataset="synth", config_dict=config_dict)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(config["seed"])
    return config, get_model(model)(config, train._dataset), train, valid, test


@pytest.fixture
def eimf_config(semantic_config):
    return dict(semantic_config, interest_source="categories", hidden_size=16)


def grads(module):
    return {
        n: p.grad
        for n, p in module.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }


def test_alignment_reaches_the_backbone_and_semantic_prediction_does_not(eimf_config):
    _, model, train, _, _ = build(dict(eimf_config, semantic_weight=0.0, align_weight=1.0))
    batch = next(iter(train))
    model.train()
    losses = model.calculate_loss(batch)
    losses[-1].backward()  # the alignment term alone
    backbone = grads(model.backbone)
    assert "item_embedding.weight" in backbone and any("extractor" in n for n in backbone)
    assert grads(model.semantic), "the alignment also trains the semantic side"

    _, model, train, _, _ = build(dict(eimf_config, semantic_weight=1.0, align_weight=0.0))
    model.train()
    losses = model.calculate_loss(next(iter(train)))
    losses[-1].backward()  # the semantic-prediction term alone
    assert not grads(model.backbone), "by design, semantic prediction never moves the backbone"
    trained = grads(model.semantic)
    assert {"interest_projection.weight", "item_text_projection.weight", "query.weight"} <= set(
        trained
    )
    assert "item_text" not in dict(model.semantic.named_parameters()), "item text is frozen"


@pytest.mark.parametrize("backbone", ["REMI", "SASRec"])
def test_zero_weights_train_bit_for_bit_like_the_backbone(eimf_config, backbone, tmp_path):
    common = dict(eimf_config, backbone=backbone, epochs=2, checkpoint_dir=str(tmp_path / "ckpt"))

    def train(model_name, extra):
        config, model, train_data, valid_data, _ = build(dict(common, **extra), model=model_name)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer.fit(train_data, valid_data, saved=False, verbose=False)
        return trainer.train_loss_dict, model

    eimf_losses, eimf = train("EIMF", {"semantic_weight": 0.0, "align_weight": 0.0})
    base_losses, base = train(backbone, {})
    assert eimf_losses == base_losses
    eimf_state, base_state = eimf.backbone.state_dict(), base.state_dict()
    assert eimf_state.keys() == base_state.keys()
    assert all(torch.equal(eimf_state[k], base_state[k]) for k in base_state)


def test_inference_is_behaviour_only_and_needs_no_semantic_files(eimf_config, tmp_path):
    config = dict(eimf_config, epochs=1)
    result = run_recbole_llm(model="EIMF", dataset="synth", config_dict=config, saved=True)
    (checkpoint,) = glob.glob(os.path.join(config["checkpoint_dir"], "EIMF-*.pth"))
    loaded, model, _, _, _, test = load_data_and_model(checkpoint)
    assert model.semantic is not None
    batch = next(iter(test))[0]
    with torch.no_grad():
        with_semantics = model.full_sort_predict(batch)
        # scores do not depend on the semantic inputs at all
        batch_without = batch.copy() if hasattr(batch, "copy") else batch
        for key in ("semantic_interests", "semantic_interest_mask"):
            batch_without.interaction.pop(key, None)
        assert torch.equal(model.full_sort_predict(batch_without), with_semantics)

    folder = loaded["data_path"]
    for name in os.listdir(folder):
        if name.split(".", 1)[1] in ("itemtext", "interest", "usertypical", "eimf.json"):
            os.remove(os.path.join(folder, name))
    _, bare, dataset, _, _, test = load_data_and_model(checkpoint)
    assert bare.semantic is None and not dataset.has_semantics
    batch = next(iter(test))[0]
    assert "semantic_interests" not in batch.interaction
    with torch.no_grad():
        assert torch.equal(bare.full_sort_predict(batch), with_semantics)
    assert result["test_result"]["ndcg@10"] >= 0


def test_users_without_semantics_are_masked_out(eimf_config):
    _, model, train, _, _ = build(dict(eimf_config, align_weight=1.0, semantic_weight=1.0))
    batch = next(iter(train))
    batch.interaction["semantic_interest_row"][:] = 0  # row 0: no semantics
    model.train()
    losses = model.calculate_loss(batch)
    assert float(losses[-2]) == 0.0, "no user has semantics: no semantic-prediction loss"
    assert torch.isfinite(losses[-1])


@pytest.mark.parametrize("backbone", ["ComiRecSA", "ComiRecDR", "MIND", "GRU4Rec"])
def test_every_backbone_trains_inside_eimf(eimf_config, backbone):
    result = run_recbole_llm(
        model="EIMF", dataset="synth", config_dict=dict(eimf_config, backbone=backbone), saved=False
    )
    assert all(0 <= v <= 1 for v in result["test_result"].values())


def test_cli_semantic_step_then_training_with_the_tiny_llm(tiny_llm, synthetic_root, tmp_path):
    import shutil

    shutil.copytree(os.path.join(synthetic_root, "synth"), tmp_path / "data" / "synth")
    config_file = tmp_path / "synth.yaml"
    config_file.write_text(
        "load_col: " + str(LOAD_TIMES) + "\ntext_fields: [movie_title, class]\n"
        "category_field: class\n"
    )
    common = [
        os.path.join(REPO, "run_recbole_llm.py"),
        "--model=EIMF",
        "--dataset=synth",
        f"--config_files={config_file}",
        f"--data_path={tmp_path / 'data'}",
        f"--llm_model={tiny_llm}",
        "--llm_max_new_tokens=8",
        "--typical_ratio=0.1",
        "--hidden_size=16",
        "--show_progress=False",
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    step = subprocess.run(
        [sys.executable, *common, "--semantics"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert step.returncode == 0, step.stderr[-3000:]
    assert "Semantics written; manifest:" in step.stderr and "LLM:" in step.stderr
    assert os.path.exists(tmp_path / "data" / "synth" / "synth.eimf.json")
    assert "will not be used in RecBole" not in step.stderr, "--semantics is ours, not a config key"

    train = subprocess.run(
        [sys.executable, *common, "--epochs=2", f"--checkpoint_dir={tmp_path / 'ckpt'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test result" in train.stderr and "train_loss" not in train.stderr
    log = re.sub(r"\x1b\[[0-9;]*m", "", train.stderr)
    assert all(f"{name}: " in log for name in ("rec", "reg", "semantic", "align", "total"))
    assert "(epoch 1 of 2, about " in log and "(epoch 2 of 2, the last)" in log
    assert "users without semantic interests" in train.stderr
    config = Config(
        model="EIMF", dataset="synth", config_dict={"data_path": str(tmp_path / "data")}
    )
    assert os.path.exists(files.manifest_path(config, "eimf"))


def test_multi_positive_info_nce_has_no_floor_from_duplicates():
    from recbole_llm.model.eimf import info_nce

    torch.manual_seed(0)
    groups = torch.arange(64) % 4  # 64 rows, 4 distinct positives, each repeated 16 times
    centres = torch.randn(4, 8)
    anchors, positives = centres[groups], centres[groups]  # perfectly aligned
    official = info_nce(anchors, positives, 0.1)
    multi = info_nce(anchors, positives, 0.1, keys=groups)
    assert official > 2.5  # about log 16: the duplicates count as negatives
    assert multi < 0.05
    # equal duplicates only shift the loss by log(count): the gradients are the same ...
    anchors = torch.randn(64, 8, requires_grad=True)
    columns = torch.randn(4, 8, requires_grad=True)
    for keys in (None, groups):
        loss = info_nce(anchors, columns[groups], 0.1, keys=keys)
        grads = torch.autograd.grad(loss, [anchors, columns])
        if keys is None:
            official_loss, official_grads = loss, grads
    assert torch.isclose(official_loss - loss, torch.log(torch.tensor(16.0)))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(official_grads, grads))
    # ... and differ where one key's columns differ
    uneven = columns[groups] + 0.3 * torch.randn(64, 8)
    official = torch.autograd.grad(info_nce(anchors, uneven, 0.1), anchors)[0]
    multi = torch.autograd.grad(info_nce(anchors, uneven, 0.1, keys=groups), anchors)[0]
    assert not torch.allclose(official, multi, atol=1e-4)
    # without duplicates the two agree
    distinct = torch.randn(16, 8)
    assert torch.allclose(
        info_nce(distinct, distinct, 0.1), info_nce(distinct, distinct, 0.1, keys=torch.arange(16))
    )


def test_semantic_targets_id_couples_the_semantic_loss_to_the_backbone(eimf_config):
    _, model, train, _, _ = build(
        dict(eimf_config, semantic_weight=1.0, align_weight=0.0, semantic_targets="id")
    )
    model.train()
    model.calculate_loss(next(iter(train)))[-1].backward()  # the semantic-prediction term alone
    assert "item_embedding.weight" in grads(model.backbone)


@pytest.mark.parametrize("targets", ["text", "id"])
def test_sampled_semantic_softmax_is_the_formula_and_draws_its_own_stream(eimf_config, targets):
    """semantic_negatives: N scores each readout against its target and N items drawn for the
    batch, a draw equal to the row's target masked; the draws come from the model's own
    generator (the backbone's random stream is untouched); with N = 0 the loss is the full
    softmax over every item, the padding item excluded."""
    config = dict(eimf_config, semantic_weight=1.0, align_weight=0.0, semantic_targets=targets)
    _, full, train, _, _ = build(config)
    _, sampled, _, _, _ = build(dict(config, semantic_negatives=7))
    sampled.load_state_dict(full.state_dict())
    batch = next(iter(train))
    full.eval(), sampled.eval()  # no dropout: the two models compute the same readouts
    rows, items = batch["semantic_interest_row"], batch[full.POS_ITEM_ID]
    readout, target_text, _ = full.semantic(rows, items)

    def classes(model, ids):
        if targets == "text":
            return model.semantic.item_text_projection(model.semantic.item_text[ids])
        return model.behaviour.item_embedding(ids)

    every = torch.arange(full.behaviour.item_embedding.num_embeddings)
    logits = readout @ classes(full, every).T
    logits[:, 0] = float("-inf")
    expected_full = torch.nn.functional.cross_entropy(logits, items)
    assert torch.allclose(full.calculate_loss(batch)[-1], expected_full, atol=1e-5)

    generator = torch.Generator().manual_seed(eimf_config["seed"] + 2)
    draws = torch.randint(1, len(every), (7,), generator=generator)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loss = sampled.calculate_loss(batch)[-1]
    assert torch.equal(torch.get_rng_state(), before), "the draws use the model's own generator"
    positive = (readout * classes(sampled, items)).sum(-1, keepdim=True)
    negative = (readout @ classes(sampled, draws).T).masked_fill(
        draws.unsqueeze(0) == items.unsqueeze(1), float("-inf")
    )
    expected = torch.nn.functional.cross_entropy(
        torch.cat([positive, negative], dim=1), torch.zeros_like(items)
    )
    assert torch.allclose(loss, expected, atol=1e-5)
    assert not torch.allclose(loss, expected_full, atol=1e-3)
    if targets == "id":  # the sampled loss still reaches the backbone
        sampled.train()
        sampled.calculate_loss(batch)[-1].backward()
        assert "item_embedding.weight" in grads(sampled.backbone)


def test_controls_remove_the_user_semantics(eimf_config):
    config = dict(eimf_config, semantic_weight=0.0, align_weight=1.0, align_mix=[1, 0, 0, 0])
    for control in ("target_text", "item_align_only"):
        _, model, train, _, _ = build(dict(config, semantic_control=control))
        model.train()
        batch = next(iter(train))
        loss = model.calculate_loss(batch)[-1]
        loss.backward()
        interest_side = model.semantic.interest_projection.weight.grad
        assert interest_side is None or interest_side.abs().sum() == 0, control
        # shuffling which typical user each row has changes nothing under either control
        batch.interaction["semantic_interest_row"] = batch["semantic_interest_row"].flip(0)
        assert torch.allclose(model.calculate_loss(batch)[-1], loss), control


def test_user_info_nce_falls_well_below_its_start_in_training(eimf_config):
    config, model, train, _, _ = build(
        dict(eimf_config, semantic_weight=0.0, align_weight=1.0, learning_rate=0.01)
    )
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def user_nce():
        batch = next(iter(train))
        interests = model.behaviour.encode(batch["item_id_list"], batch["item_length"])
        readout = model.behaviour.readout(interests, batch["item_id"])
        semantic, _, mask = model.semantic(batch["semantic_interest_row"], batch["item_id"])
        valid = mask.any(dim=1)
        rows = batch["semantic_interest_row"][valid]
        return info_nce(readout[valid], semantic[valid], model.temperature, keys=rows)

    from recbole_llm.model.eimf import info_nce

    with torch.no_grad():
        start = user_nce().item()
    for _ in range(16):
        for batch in train:
            optimizer.zero_grad()
            sum(model.calculate_loss(batch)).backward()
            optimizer.step()
    with torch.no_grad():
        end = user_nce().item()
    # measured: 1.60 -> 0.71 after 20 epochs; the official form (duplicates as negatives) stays
    # above 5.1 from 5.56 on the same batches
    assert end < 0.6 * start, (start, end)


def test_probe_signal_measures_each_terms_share_of_the_backbone_gradient(eimf_config):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import probe_signal

    shares = {}
    for targets in ("text", "id"):
        _, model, train, _, _ = build(dict(eimf_config, semantic_targets=targets))
        shares[targets] = probe_signal.gradient_shares(model, train, batches=2)
    names = {"recommendation", "backbone regulariser", "semantic prediction", "alignment"}
    assert set(shares["text"]) == names  # REMI, the default backbone, has a regulariser
    assert shares["text"]["semantic prediction"] == 0  # frozen text targets: never the backbone
    # measured at initialisation on synth: REMI's regulariser 0.974, recommendation 0.014,
    # alignment 0.011, semantic prediction 0.0003 (id) and exactly 0 (text)
    assert shares["id"]["semantic prediction"] > 1e-4
    assert all(abs(sum(s.values()) - 1) < 1e-6 for s in shares.values())


def test_log_names_each_loss_and_prints_the_backbone_once(eimf_config, caplog):
    config, model, train, _, _ = build(dict(eimf_config, align_weight=1.0, semantic_weight=1.0))
    assert repr(model).count("REMI(") == 1, "the backbone is printed once"
    assert not [k for k in model.state_dict() if k.startswith("behaviour.")]
    # a checkpoint from before, holding the backbone twice, still loads
    old = dict(model.state_dict())
    old.update({f"behaviour.{k}": v for k, v in model.backbone.state_dict().items()})
    model.load_state_dict(old)
    with torch.no_grad():
        losses = model.calculate_loss(next(iter(train)))
    assert model.loss_names == ("rec", "reg", "semantic", "align") and len(losses) == 4
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.epochs, trainer.epoch_seconds = 20, [27.7]
    losses = tuple(float(x) for x in losses)
    line = re.sub(r"\x1b\[[0-9;]*m", "", trainer._generate_train_loss_output(6, 0, 1, losses))
    assert "rec: " in line and "reg: " in line and "align: " in line and "total: " in line
    assert "train_loss" not in line and line.endswith("(epoch 7 of 20, about 6 min left)")


def test_epoch_progress_counts_epochs_and_estimates_the_time_left():
    from recbole_llm.trainer import epoch_progress

    assert epoch_progress(6, 20, 27.7) == "epoch 7 of 20, about 6 min left"
    assert epoch_progress(0, 3, 10.0) == "epoch 1 of 3, about 20 s left"
    assert epoch_progress(19, 20, 27.7) == "epoch 20 of 20, the last"
