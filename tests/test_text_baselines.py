"""Text-aware baselines: RecBole's feature-aware models and SASRec read the item text vectors of
EIMF's or LLM4SBR's semantic step (``item_text_source``), as a feature or as their initial item
embeddings (``item_text_init``), and the text really reaches them."""

import numpy as np
import pytest
import torch
from recbole.utils import init_seed
from synthetic import SESSION_FORMAT

from recbole_llm.config import Config
from recbole_llm.data import item_text
from recbole_llm.data.utils import data_preparation
from recbole_llm.errors import UserError
from recbole_llm.quick_start import build_model, create_dataset, run_recbole_llm, run_semantics
from recbole_llm.semantics.files import SemanticsError

FEATURE = {"selected_features": ["item_text"], "numerical_features": ["item_text"]}
SMALL = {"n_layers": 1, "n_heads": 2, "inner_size": 32, "epochs": 1}


@pytest.fixture
def eimf_text(semantic_config):
    """``synth`` with EIMF's semantic files (genre interests: no LLM call), and the settings of a
    text baseline that reads them."""
    run_semantics("EIMF", "synth", config_dict=dict(semantic_config, interest_source="categories"))
    return dict(semantic_config, item_text_source="eimf", **SMALL)


def build(model, settings, shuffle=None, monkeypatch=None):
    """Dataset, model (seeded as the entry points seed it) and the test loader; ``shuffle``: a
    permutation of the items given to the text vectors' rows (row i gets item shuffle[i]'s)."""
    if shuffle is not None:
        read = item_text._item_text

        def shuffled(dataset, manifest):
            matrix = read(dataset, manifest)
            return torch.cat([matrix[:1], matrix[1:][torch.as_tensor(shuffle)]])

        monkeypatch.setattr(item_text, "_item_text", shuffled)
    config = Config(model=model, dataset="synth", config_dict=settings)
    dataset = create_dataset(config)
    train, _, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    if shuffle is not None:
        monkeypatch.setattr(item_text, "_item_text", read)
    return train._dataset, build_model(config, train._dataset), test


def test_item_text_enters_the_feature_layer_as_a_linear_map_of_the_whole_vector(eimf_text):
    dataset, model, _ = build("SASRecF", dict(eimf_text, **FEATURE))
    text = dataset.item_text_matrix()
    assert isinstance(dataset, item_text.ItemTextDataset) and text.shape[1] == 384
    assert torch.equal(text[0], torch.zeros(384)) and (text[1:].norm(dim=1) > 0).all()
    items = torch.arange(1, dataset.item_num).view(1, -1)
    _, dense = model.feature_embed_layer(None, items)
    table = model.feature_embed_layer.float_seq_embedding_table["item"][0].weight
    # pooling_mode sum: every dimension has its own row, so the layer gives W x, not mean(x) w
    expected = text[1:] @ table[1:]
    assert torch.allclose(dense["item"][0, :, 0], expected, atol=1e-5)
    # SASRecF's concat layer is fed its item embedding and one feature embedding
    assert model.concat_layer.in_features == 2 * model.hidden_size


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_float_seq_embedding_without_the_per_element_product_is_recboles(eimf_text, pooling):
    from recbole.model.layers import ContextSeqEmbAbstractLayer

    _, model, _ = build("SASRecF", dict(eimf_text, pooling_mode=pooling, **FEATURE))
    layer = model.feature_embed_layer
    torch.manual_seed(0)
    values = torch.randn(3, 5, 7)
    index = torch.randint(0, 9, (3, 5, 7)).float()  # some entries are padding (index 0)
    index[0, 0] = 0  # a row of padding only
    fields = [torch.stack([values, index], dim=-1)]
    ours = layer.embed_float_seq_fields(fields, "item")
    recboles = ContextSeqEmbAbstractLayer.embed_float_seq_fields(layer, fields, "item")
    assert ours.shape == recboles.shape == (3, 5, 1, model.hidden_size)
    assert torch.allclose(ours, recboles, atol=1e-5)


@pytest.mark.parametrize("model_name", ["SASRecF", "GRU4RecF", "FDSA"])
def test_feature_aware_models_train_on_item_text_and_read_it(
    model_name, eimf_text, monkeypatch, tmp_path
):
    settings = dict(eimf_text, **FEATURE)
    dataset, model, test = build(model_name, settings)
    _, same, _ = build(model_name, settings)
    n = dataset.item_num - 1
    shuffle = np.random.default_rng(0).permutation(n)
    _, shuffled, _ = build(model_name, settings, shuffle, monkeypatch)
    batch = next(iter(test))[0]
    for m in (model, same, shuffled):
        m.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert torch.equal(scores, same.full_sort_predict(batch))  # the same build, the same
        assert not torch.allclose(scores, shuffled.full_sort_predict(batch), atol=1e-4)

    result = run_recbole_llm(
        model=model_name, dataset="synth", config_dict=dict(settings, epochs=2), saved=True
    )
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in result["test_result"].values())
    # the checkpoint holds tensors and plain data only: it loads without unpickling
    (checkpoint,) = (tmp_path / "saved").glob(f"{model_name}-*.pth")
    state = torch.load(checkpoint, weights_only=True)
    assert state["other_parameter"] == {}


def test_sasrec_item_embeddings_start_from_the_projected_text(eimf_text, monkeypatch):
    settings = dict(eimf_text, item_text_init="pca")
    dataset, model, test = build("SASRec", settings)
    plain_settings = dict(eimf_text, item_text_source="none")
    _, plain, _ = build("SASRec", plain_settings)
    table, own = model.item_embedding.weight.detach(), plain.item_embedding.weight.detach()
    assert torch.equal(table[0], own[0])  # the padding row keeps its initial value
    assert float(table[1:].std()) == pytest.approx(float(own[1:].std()), rel=1e-4)
    # similar texts, similar embeddings: the table's inner products follow the centred texts'
    text = dataset.item_text_matrix()[1:].double()
    text = text - text.mean(dim=0)
    upper = torch.triu_indices(len(text), len(text), 1)
    gram_text, gram_table = text @ text.T, table[1:].double() @ table[1:].double().T
    correlation = np.corrcoef(gram_text[upper[0], upper[1]], gram_table[upper[0], upper[1]])
    assert correlation[0, 1] > 0.95
    # the rows follow the items' texts: shuffled texts give the same rows, shuffled
    shuffle = np.random.default_rng(0).permutation(len(text))
    _, shuffled, _ = build("SASRec", settings, shuffle, monkeypatch)
    moved = shuffled.item_embedding.weight.detach()[1:]
    assert torch.allclose(moved, table[1:][torch.as_tensor(shuffle)], atol=1e-5)
    # ... and so do the initial scores; everything but the item table is plain SASRec's
    batch = next(iter(test))[0]
    model.eval(), plain.eval()
    with torch.no_grad():
        assert not torch.allclose(model.full_sort_predict(batch), plain.full_sort_predict(batch))
    others = {k: v for k, v in plain.state_dict().items() if not k.startswith("item_embedding")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in others.items())

    result = run_recbole_llm(model="SASRec", dataset="synth", config_dict=settings, saved=False)
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in result["test_result"].values())


def test_random_projection_is_seeded_and_keeps_similarities():
    torch.manual_seed(0)
    text = torch.randn(200, 384)
    first = item_text.project_item_text(text, 64, "random", seed=1)
    assert torch.equal(first, item_text.project_item_text(text, 64, "random", seed=1))
    assert not torch.equal(first, item_text.project_item_text(text, 64, "random", seed=2))
    centred = text[1:].double() - text[1:].double().mean(dim=0)
    ratio = (first.norm(dim=1) / centred.norm(dim=1)).mean()  # JL: norms kept on average
    assert float(ratio) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(UserError, match="at most 199 components"):
        item_text.project_item_text(text, 250, "pca", seed=1)


def test_llm4sbr_item_text_reaches_a_session_baseline(tmp_path, tiny_llm):
    from synthetic import write_synthetic_sessions

    root = str(tmp_path / "sessions")
    write_synthetic_sessions(root)
    settings = {
        "data_path": root,
        **SESSION_FORMAT,
        "text_fields": ["movie_title", "class"],
        "intent_source": "last_item",  # the LLM-free intents: item text without an LLM call
        "llm_model": tiny_llm,
        "semantics_cache_dir": str(tmp_path / "cache"),
        "embedding_size": 16,
        "hidden_size": 16,
        "show_progress": False,
        "state": "ERROR",
        "checkpoint_dir": str(tmp_path / "saved"),
    }
    run_semantics("LLM4SBR", "synth-session", config_dict=settings)
    baseline = dict(settings, item_text_source="llm4sbr", item_text_init="random", epochs=1)
    config = Config(model="GRU4Rec", dataset="synth-session", config_dict=baseline)
    dataset = create_dataset(config)
    assert isinstance(dataset, item_text.ItemTextDataset)
    result = run_recbole_llm(model="GRU4Rec", dataset="synth-session", config_dict=baseline)
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in result["test_result"].values())
    # another encoder's vectors would not be the ones LLM4SBR read
    other = dict(baseline, text_fields=["movie_title"])
    with pytest.raises(SemanticsError, match="made with text_fields"):
        create_dataset(Config(model="GRU4Rec", dataset="synth-session", config_dict=other))


def test_text_baselines_refuse_what_would_not_read_the_text(eimf_text, fast_config):
    with pytest.raises(UserError, match="reads its own semantics"):
        create_dataset(Config(model="EIMF", dataset="synth", config_dict=eimf_text))
    with pytest.raises(UserError, match="numerical_features"):
        settings = dict(eimf_text, selected_features=["item_text"])
        create_dataset(Config(model="SASRecF", dataset="synth", config_dict=settings))
    with pytest.raises(UserError, match="name the semantic step"):
        create_dataset(
            Config(
                model="SASRec", dataset="synth", config_dict=dict(fast_config, item_text_init="pca")
            )
        )
    # the files of a step that never ran: an error with the command that makes them
    missing = dict(eimf_text, item_text_source="llm4sbr")
    with pytest.raises(SemanticsError, match="--model=LLM4SBR --dataset=synth --semantics"):
        create_dataset(Config(model="SASRec", dataset="synth", config_dict=missing))
