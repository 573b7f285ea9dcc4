"""ComiRec-SA, ComiRec-DR, MIND and REMI: masking, scoring, losses, and training from the CLI."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from recbole_llm.config import Config
from recbole_llm.data.utils import data_preparation
from recbole_llm.model.layers import sampled_softmax_loss
from recbole_llm.quick_start import create_dataset
from recbole_llm.registry import get_model

MODELS = ["ComiRecSA", "ComiRecDR", "MIND", "REMI"]


def build(model_name, fast_config, **extra):
    config = Config(
        model=model_name,
        dataset="synth",
        config_dict=dict(fast_config, hidden_size=16, **extra),
    )
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    torch.manual_seed(0)
    model = get_model(model_name)(config, train_data._dataset)
    model.eval()
    return model, next(iter(train_data)), next(iter(test_data))[0]


@pytest.mark.parametrize("model_name", MODELS)
def test_padding_never_influences_interests(model_name, fast_config):
    model, batch, _ = build(model_name, fast_config)
    item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    assert (item_seq_len < item_seq.size(1)).any(), "the batch must contain padded rows"
    junk = item_seq.clone()
    padded = torch.arange(item_seq.size(1)).unsqueeze(0) >= item_seq_len.unsqueeze(1)
    junk[padded] = torch.randint(1, model.n_items, (int(padded.sum()),))
    with torch.no_grad():
        clean = model.encode(item_seq, item_seq_len)
        dirty = model.encode(junk, item_seq_len)
    assert clean.vectors.shape == (item_seq.size(0), model.interest_num, 16)
    assert torch.equal(clean.vectors, dirty.vectors)


@pytest.mark.parametrize("model_name", MODELS)
def test_length_one_and_empty_sequences_stay_finite(model_name, fast_config):
    model, batch, _ = build(model_name, fast_config)
    item_seq = batch[model.ITEM_SEQ][:3].clone()
    item_seq_len = torch.tensor([1, 0, 2])
    item_seq[:, 2:] = 0
    model.train()
    interests = model.encode(item_seq, item_seq_len)
    assert torch.isfinite(interests.vectors).all()
    loss = model.recommendation_loss(
        model.readout(interests, batch[model.POS_ITEM_ID][:3]), batch[model.POS_ITEM_ID][:3]
    )
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("model_name", MODELS)
def test_full_sort_equals_max_over_interests_of_predict(model_name, fast_config):
    model, _, eval_batch = build(model_name, fast_config)
    rows = eval_batch[:4]
    with torch.no_grad():
        full = model.full_sort_predict(rows)
        vectors = model(rows[model.ITEM_SEQ], rows[model.ITEM_SEQ_LEN])
        assert full.shape == (4, model.n_items)
        for item in range(model.n_items):
            single = rows.copy() if hasattr(rows, "copy") else rows
            single.interaction[model.ITEM_ID] = torch.full((4,), item)
            assert torch.allclose(model.predict(single), full[:, item], atol=1e-6)
        manual = (vectors @ model.item_embedding.weight.T).max(dim=1).values
        if model_name != "MIND":  # MIND ignores inactive interests (checked below)
            assert torch.allclose(manual, full, rtol=0, atol=1e-6)
    # the padding id is never a training class and its embedding stays zero
    assert torch.count_nonzero(model.item_embedding.weight[0]) == 0


def test_mind_gives_short_histories_fewer_interests(fast_config):
    model, batch, _ = build("MIND", fast_config)
    lengths = torch.tensor([1, 3, 4, 8, 10])
    active = model.active_interests(lengths)
    assert active.sum(dim=1).tolist() == [1, 1, 2, 3, 3]
    item_seq = batch[model.ITEM_SEQ][:5]
    with torch.no_grad():
        interests = model.encode(item_seq, lengths)
        assert torch.count_nonzero(interests.vectors[0, 1:]) == 0
        scores = model.full_sort_predict(
            type(batch)({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths})
        )
    only_first = interests.vectors[0, 0] @ model.item_embedding.weight.T
    assert torch.allclose(scores[0], only_first, atol=1e-6)
    # the per-interest running maximum is the max over [B, K, N] with inactive interests out
    # (to float rounding: one [B, d] product per interest need not round as one [B * K, d] one)
    dense = interests.vectors @ model.item_embedding.weight.T
    dense = dense.masked_fill(~active[:5].unsqueeze(-1), float("-inf"))
    assert torch.allclose(scores, dense.max(dim=1).values, rtol=0, atol=1e-6)


def test_remi_regularisation_and_hard_negatives(fast_config):
    model, batch, _ = build("REMI", fast_config)
    model.train()
    losses = model.calculate_loss(batch)
    assert isinstance(losses, tuple) and len(losses) == 2
    assert all(torch.isfinite(loss) and loss > 0 for loss in losses)

    model_ssm, batch, _ = build(
        "REMI", fast_config, loss_type="SSM", sample_num=32, hard_negative_beta=1.0
    )
    model_ssm.train()
    assert all(torch.isfinite(loss) for loss in model_ssm.calculate_loss(batch))
    with pytest.raises(ValueError, match="needs loss_type: SSM"):
        build("REMI", fast_config, hard_negative_beta=1.0)


def test_sampled_softmax_matches_its_definition():
    torch.manual_seed(0)
    table = torch.randn(10, 4)
    user = torch.randn(3, 4)
    targets = torch.tensor([1, 2, 3])
    generator = torch.Generator().manual_seed(5)
    loss = sampled_softmax_loss(user, table, targets, 6, generator=generator)
    negatives = torch.randint(1, 10, (6,), generator=torch.Generator().manual_seed(5))
    expected = 0.0
    for row in range(3):
        keep = negatives[negatives != targets[row]]
        logits = torch.cat(
            [user[row] @ table[targets[row]].unsqueeze(1), user[row] @ table[keep].T]
        )
        expected += -torch.log_softmax(logits, dim=0)[0] / 3
    assert torch.allclose(loss, expected)
    # beta = 0 is exactly the plain sampled softmax
    beta0 = sampled_softmax_loss(
        user, table, targets, 6, beta=1e-12, generator=torch.Generator().manual_seed(5)
    )
    assert math.isclose(beta0.item(), loss.item(), rel_tol=1e-4)


@pytest.mark.parametrize("model_name", MODELS)
def test_trains_through_the_cli_and_loss_falls(model_name, synthetic_root, tmp_path):
    config_file = tmp_path / "synth.yaml"
    config_file.write_text("load_col:\n  inter: [user_id, item_id, rating, timestamp]\n")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "run_recbole_llm.py"),
            f"--model={model_name}",
            "--dataset=synth",
            f"--config_files={config_file}",
            f"--data_path={synthetic_root}",
            "--epochs=6",
            "--hidden_size=16",
            "--MAX_ITEM_LIST_LENGTH=10",
            "--learning_rate=0.005",
            "--train_batch_size=256",
            "--show_progress=False",
            f"--checkpoint_dir={tmp_path / 'saved'}",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"train loss: ([\d.]+)", result.stderr)]
    if not losses:  # models with a regulariser log each term separately
        losses = [
            sum(float(v) for v in re.findall(r"train_loss\d: ([\d.]+)", line))
            for line in result.stderr.splitlines()
            if "training [time" in line
        ]
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    assert "test result" in result.stderr
