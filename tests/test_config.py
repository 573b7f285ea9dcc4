"""Config precedence, the fairness rule, registry errors and dataset defaults."""

import os
import re

import pytest
import yaml
from recbole.utils import ModelType

import recbole_llm.config as config_module
from recbole_llm import registry
from recbole_llm.config import Config
from recbole_llm.errors import UserError

KEYS = ["k_overall", "k_model", "k_dataset", "k_file", "k_dict", "k_cmd"]


@pytest.fixture
def layered_properties(tmp_path, monkeypatch):
    """Our YAML layers in a temporary properties folder; each layer sets its key and later ones."""
    root = tmp_path / "properties"
    (root / "model").mkdir(parents=True)
    (root / "dataset").mkdir()

    def layer(path, level, extra=None):
        values = {key: KEYS[level] for key in KEYS[level:]}
        values.update(extra or {})
        path.write_text(yaml.safe_dump(values))

    # RecBole defaults < our overall: a RecBole key set here must win over RecBole's default
    layer(root / "overall.yaml", 0, {"learning_rate": 0.123})
    layer(root / "model" / "SASRec.yaml", 1)
    layer(root / "dataset" / "synth.yaml", 2)
    user_file = tmp_path / "user.yaml"
    layer(user_file, 3)
    monkeypatch.setattr(config_module, "properties_dir", lambda: str(root))
    return str(user_file)


def test_precedence_of_every_layer(layered_properties, synthetic_root, monkeypatch):
    monkeypatch.setattr("sys.argv", ["run_recbole_llm.py", "--k_cmd=k_cmd"])
    config = Config(
        model="SASRec",
        dataset="synth",
        config_file_list=[layered_properties],
        config_dict={"k_dict": "k_dict", "k_cmd": "k_dict", "data_path": synthetic_root},
    )
    assert [config[key] for key in KEYS] == KEYS
    assert config["learning_rate"] == 0.123


def test_shipped_overall_yaml_only_adds_our_own_keys():
    """Fairness rule: our overall.yaml never changes how a RecBole baseline trains."""
    import recbole

    ours = yaml.safe_load(open(os.path.join(config_module.properties_dir(), "overall.yaml")))
    recbole_props = os.path.join(os.path.dirname(recbole.__file__), "properties")
    recbole_keys = set()
    for folder, _, files in os.walk(recbole_props):
        for name in files:
            if name.endswith(".yaml"):
                content = yaml.safe_load(open(os.path.join(folder, name))) or {}
                recbole_keys.update(content)
    assert ours and not set(ours) & recbole_keys


def test_ml_100k_lives_in_our_data_root(tmp_path):
    config = Config(model="BPR", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})
    assert config["data_path"] == os.path.join(str(tmp_path), "ml-100k")


def test_dataset_defaults_to_model_yaml_then_ml_100k(tmp_path, monkeypatch):
    root = tmp_path / "properties"
    (root / "model").mkdir(parents=True)
    (root / "model" / "GRU4Rec.yaml").write_text("default_dataset: synth\n")
    monkeypatch.setattr(config_module, "properties_dir", lambda: str(root))
    assert Config(model="GRU4Rec")["dataset"] == "synth"
    assert Config(model="SASRec")["dataset"] == "ml-100k"


def test_ce_sequential_models_need_no_neg_sampling_flag():
    config = Config(model="SASRec", dataset="synth")
    assert config["train_neg_sample_args"]["distribution"] == "none"
    bpr_loss = Config(model="SASRec", dataset="synth", config_dict={"loss_type": "BPR"})
    assert bpr_loss["train_neg_sample_args"]["distribution"] == "uniform"
    with pytest.raises(ValueError, match="should be None"):
        Config(
            model="SASRec",
            dataset="synth",
            config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
        )


def test_unknown_model_lists_closest_names():
    with pytest.raises(ValueError, match=r"Unknown model 'SASRc'.*SASRec"):
        registry.get_model("SASRc")
    with pytest.raises(ValueError, match=r"Unknown model 'sasrec'.*SASRec"):
        registry.get_model("sasrec")


def test_unknown_trainer_and_dataset_class_list_closest_names():
    with pytest.raises(ValueError, match=r"Unknown trainer 'KGTrainr'.*KGTrainer"):
        registry.get_trainer(ModelType.GENERAL, "BPR", "KGTrainr")
    config = Config(model="BPR", dataset="synth", config_dict={"dataset_class": "SequentialDatset"})
    with pytest.raises(ValueError, match=r"Unknown dataset class.*SequentialDataset"):
        registry.get_dataset_class(config)


def test_registry_resolves_recbole_models_and_trainers():
    from recbole.trainer import Trainer

    from recbole_llm.trainer import CompatTrainerMixin

    assert registry.get_model("SASRec").__name__ == "SASRec"
    trainer = registry.get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(trainer, Trainer) and issubclass(trainer, CompatTrainerMixin)
    assert "SASRec" in registry.known_models() and "BPR" in registry.known_models()


def test_valid_metric_must_be_computed():
    with pytest.raises(ValueError, match=r"valid_metric 'MRR@10' is not computed.*mrr@5"):
        Config(model="SASRec", dataset="synth", config_dict={"topk": [5, 20]})


def test_name_lists_from_the_command_line_need_no_quotes(monkeypatch):
    argv = ["run_recbole_llm.py", "--intent_views=[normal]", "--text_fields=[title, 'genre']"]
    monkeypatch.setattr("sys.argv", argv)
    config = Config(model="SASRec", dataset="synth")
    assert config["intent_views"] == ["normal"]
    assert config["text_fields"] == ["title", "genre"]
    monkeypatch.setattr("sys.argv", ["run_recbole_llm.py", "--intent_views=['long','short']"])
    assert Config(model="SASRec", dataset="synth")["intent_views"] == ["long", "short"]
    monkeypatch.setattr("sys.argv", ["run_recbole_llm.py", "--intent_views=normal"])
    assert Config(model="SASRec", dataset="synth")["intent_views"] == ["normal"]


def test_a_shared_config_naming_a_backbone_runs_the_backbone_alone_too():
    # suites run GRU4Rec and LLM4SBR-GRU4Rec under one config that names the backbone
    alone = Config(model="GRU4Rec", dataset="synth", config_dict={"backbone": "GRU4Rec"})
    assert alone.backbone_class is None
    wrapped = Config(model="LLM4SBR", dataset="synth", config_dict={"backbone": "GRU4Rec"})
    assert wrapped.backbone_class.__name__ == "GRU4Rec"
    with pytest.raises(UserError, match="own backbone"):
        Config(model="EIMF", dataset="synth", config_dict={"backbone": "EIMF"})


def test_use_gpu_in_the_config_says_what_the_run_uses():
    import torch

    config = Config(model="Pop", config_dict={"use_gpu": True})
    assert config["use_gpu"] == (config["device"].type == "cuda")
    if not torch.cuda.is_available():
        dump = re.sub(r"\x1b\[[0-9;]*m", "", str(config))
        assert config["use_gpu"] is False and "use_gpu = False" in dump
