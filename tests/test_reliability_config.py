"""Issue 21 items 2, 5, 6 and 7: checkpoints that are safe to load, config keys and values
checked when the config is built, secrets refused, and user errors that name the file."""

import glob
import json
import math
import os
import re
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import FAST, REPO, SYNTH_TEXT
from loopback import ChatServer, chat_payload
from recbole.utils import ModelType, init_seed

from recbole_llm import bench as benchmark
from recbole_llm import cli, compat, hyper, keys
from recbole_llm import semantic_step as pipeline
from recbole_llm.compat import CheckpointError, load_checkpoint, save_checkpoint
from recbole_llm.config import Config, ConfigError, properties_dir, restore_config
from recbole_llm.data.prepare import DatasetError
from recbole_llm.quick_start import (
    create_dataset,
    load_data_and_model,
    run_recbole_llm,
    train_and_test,
)
from recbole_llm.semantics import files
from recbole_llm.semantics.files import SemanticsError

SECRET = "sk-live-4f9a0c2e7b1d-do-not-log"


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """SASRec trained for one epoch on ``synth``: its best checkpoint, training state, and the
    scores it gives one test batch."""
    folder = tmp_path_factory.mktemp("trained")
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(folder)  # RecBole writes log/ and log_tensorboard/ into the working directory
    sys.argv = ["pytest"]
    try:
        settings = dict(
            FAST,
            data_path=synthetic_root,
            checkpoint_dir=str(folder / "saved"),
            training_state_file=str(folder / "state.pth"),
        )
        config = Config(model="SASRec", dataset="synth", config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        result, trainer, test_data = train_and_test(config, saved=True, verbose=False)
    finally:
        os.chdir(cwd)
        sys.argv = argv
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = trainer.model.full_sort_predict(batch)
    return SimpleNamespace(
        checkpoint=trainer.saved_model_file,
        state=settings["training_state_file"],
        settings=settings,
        batch=batch,
        scores=scores,
        result=result,
    )


def copy_checked(path, folder):
    """A copy of a checkpoint and its checksum file in ``folder``."""
    target = os.path.join(folder, os.path.basename(path))
    shutil.copy(path, target)
    shutil.copy(compat.checksum_path(path), compat.checksum_path(target))
    return target


class Payload:
    """Unpickling this creates ``marker``: stands for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------- checkpoints (item 2)


def test_checkpoint_holds_plain_data_and_reloads_to_the_same_scores(trained):
    checkpoint = torch.load(trained.checkpoint, weights_only=True)
    json.dumps(checkpoint["config"])  # plain data: no pickled Config
    assert checkpoint["config"]["model"] == "SASRec"
    assert os.path.isfile(compat.checksum_path(trained.checkpoint))
    assert os.path.isfile(compat.checksum_path(trained.state))

    config, model, _, _, _, _ = load_data_and_model(trained.checkpoint)
    assert isinstance(config, Config) and config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(trained.batch), trained.scores)


def test_a_pickled_payload_never_runs(trained, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    state = torch.load(trained.checkpoint, weights_only=True)
    state["other_parameter"] = {"x": Payload(str(marker))}
    torch.save(state, str(evil))
    with pytest.raises(CheckpointError, match=re.escape(f"'{evil}' has no checksum file")):
        load_data_and_model(str(evil))
    # even with a checksum that matches (anyone can write one), nothing is unpickled
    compat.write_checked(str(evil), evil.read_bytes())
    with pytest.raises(CheckpointError) as err:
        load_data_and_model(str(evil))
    message = str(err.value)
    assert f"'{evil}' holds pickled Python objects" in message and "trust_checkpoint" in message
    assert "\n" not in message
    # the training state is loaded the same way
    evil_state = tmp_path / "evil-state.pth"
    torch.save({"identity": Payload(str(marker))}, str(evil_state))
    compat.write_checked(str(evil_state), evil_state.read_bytes())
    config = Config(
        model="SASRec",
        dataset="synth",
        config_dict=dict(trained.settings, training_state_file=str(evil_state)),
    )
    with pytest.raises(CheckpointError, match=re.escape(str(evil_state))):
        train_and_test(config, verbose=False)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(trained, tmp_path, damage):
    for original in (trained.checkpoint, trained.state):
        path = copy_checked(original, tmp_path)
        data = bytearray(open(path, "rb").read())
        if damage == "truncated":
            data = data[: len(data) // 2]
        else:  # 16 bytes in the middle: inside the weights, torch itself would not notice
            middle = len(data) // 2
            data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        open(path, "wb").write(bytes(data))
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(f"Checkpoint '{path}'")
        assert "does not match its checksum" in str(err.value)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_data_and_model(path, trust_checkpoint=True)  # trust does not cover damage


def test_a_legacy_pickled_checkpoint_needs_trust(trained, tmp_path):
    """RecBole's own checkpoints (and ours before) pickle the Config and have no checksum."""
    legacy = tmp_path / "legacy.pth"
    state = torch.load(trained.checkpoint, weights_only=True)
    state["config"] = restore_config(state["config"])  # a Config object, as RecBole saves
    torch.save(state, str(legacy))
    with pytest.raises(CheckpointError, match="only for files you made yourself"):
        load_data_and_model(str(legacy))
    _, model, _, _, _, _ = load_data_and_model(str(legacy), trust_checkpoint=True)
    with torch.no_grad():
        assert torch.equal(model.full_sort_predict(trained.batch), trained.scores)
    # a truncated file without a checksum still names the file, even when trusted
    legacy.write_bytes(legacy.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=re.escape(f"Cannot read checkpoint '{legacy}'")):
        load_checkpoint(str(legacy), trust=True)


def test_a_kill_between_the_two_renames_leaves_a_file_that_verifies(tmp_path, monkeypatch):
    path = str(tmp_path / "state.pth")
    save_checkpoint({"epoch": 1}, path)
    real_write = compat.atomic_write

    def killed_at_the_file(target, write, binary=False):
        if target == path:
            raise KeyboardInterrupt  # the process dies before the new file is in place
        real_write(target, write, binary)

    monkeypatch.setattr(compat, "atomic_write", killed_at_the_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.setattr(compat, "atomic_write", real_write)
    assert len(open(compat.checksum_path(path)).read().splitlines()) == 2
    assert load_checkpoint(path) == {"epoch": 1}
    save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path) == {"epoch": 2}
    assert len(open(compat.checksum_path(path)).read().splitlines()) == 1


# ---------------------------------------------------------------- config (items 5 and 7)


def cli_error(monkeypatch, capsys, *args):
    """The one error line run_recbole_llm.py prints for ``args`` (exit status 2)."""
    monkeypatch.setattr(sys, "argv", ["run_recbole_llm.py", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out + captured.err


def test_a_misspelled_key_is_an_error_with_the_closest_names(monkeypatch, capsys, tmp_path):
    out = cli_error(monkeypatch, capsys, "--model=Pop", "--learnin_rate=0.01")
    assert (
        "Unknown config key 'learnin_rate' (on the command line; did you mean: learning_rate" in out
    )
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("train_batch_sise: 64\n")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(ConfigError, match=re.escape(f"in config file '{user_file}'; did you mean")):
        Config(model="SASRec", dataset="synth", config_file_list=[str(user_file)])
    # keys of one's own pass with strict_keys off
    config = Config(
        model="SASRec", dataset="synth", config_dict={"strict_keys": False, "my_setting": 3}
    )
    assert config["my_setting"] == 3


def test_values_are_checked_against_their_declared_types(monkeypatch, capsys):
    out = cli_error(monkeypatch, capsys, "--model=EIMF", "--max_interests=2.5")
    assert "Config key 'max_interests' (on the command line) must be an integer, got 2.5" in out
    out = cli_error(monkeypatch, capsys, "--model=EIMF", "--auto_semantics=maybe")
    assert "Config key 'auto_semantics' (on the command line) must be True or False" in out
    out = cli_error(monkeypatch, capsys, "--model=Pop", "--epochs=abc")
    assert "Config key 'epochs' must be an integer, got 'abc'" in out
    monkeypatch.setattr(sys, "argv", ["run_recbole_llm.py", "--semantics_dir=2024"])
    assert Config(model="EIMF", dataset="synth")["semantics_dir"] == "2024", "a folder name"


@pytest.mark.parametrize(
    "model, key, value",
    [
        ("EIMF", "typical_assignment", "clustered"),
        ("EIMF", "interest_source", "gpt"),
        ("EIMF", "llm_backend", "vllm"),
        ("EIMF", "semantic_control", "target"),
        ("LLM4SBR", "intent_aggregation", "max"),
        ("LLM4SBR", "intent_source", "random"),
        ("LLM4SBR", "fusion", "gated"),
        ("REMI", "loss_type", "BPR"),
        ("EIMF", "loss_type", "BPR"),  # the backbone's (REMI's) choices apply to EIMF too
    ],
)
def test_choices_are_checked_when_the_config_is_built(model, key, value):
    with pytest.raises(
        ConfigError, match=rf"^{key} must be one of .*got '{value}' \(in config_dict\)"
    ):
        Config(model=model, dataset="synth", config_dict={key: value})


def test_an_unknown_backbone_fails_before_the_semantic_step(semantic_config, monkeypatch):
    def no_semantics(*args, **kwargs):
        raise AssertionError("the semantic step ran")

    monkeypatch.setattr(pipeline, "run_pipeline", no_semantics)
    with pytest.raises(ConfigError, match=r"backbone \(in config_dict\): Unknown model 'REMIX'"):
        run_recbole_llm(
            model="EIMF", dataset="synth", config_dict=dict(semantic_config, backbone="REMIX")
        )
    folder = os.path.join(semantic_config["data_path"], "synth")
    assert sorted(os.listdir(folder)) == ["synth.inter", "synth.item"], "nothing was written"


def test_an_unwritable_data_path_fails_when_the_config_is_built(semantic_config, tmp_path):
    folder = os.path.join(semantic_config["data_path"], "synth")
    open(os.path.join(folder, "blocked"), "w").close()  # a file where a folder would go
    with pytest.raises(ConfigError, match="writes its semantic files to .*blocked/sub"):
        Config(
            model="EIMF",
            dataset="synth",
            config_dict=dict(semantic_config, semantics_dir="blocked/sub"),
        )
    # ready-made semantics in a read-only place: the message says how to use them
    with pytest.raises(ConfigError, match="set auto_semantics: False"):
        Config(
            model="EIMF",
            dataset="synth",
            config_dict=dict(semantic_config, semantics_dir="blocked"),
        )
    Config(
        model="EIMF",
        dataset="synth",
        config_dict=dict(semantic_config, semantics_dir="blocked", auto_semantics=False),
    )
    with pytest.raises(ConfigError, match="dataset 'ml-100k' is to be prepared"):
        Config(model="SASRec", dataset="ml-100k", config_dict={"data_path": f"{folder}/blocked"})


def sweep_values(path):
    """One value per parameter of a sweep file (the first choice, the lower bound)."""
    values = {}
    for param in hyper.load_params_file(path):
        value = param.args[0]
        values[param.name] = math.exp(value) if param.kind == "loguniform" else value
    return values


def test_every_shipped_suite_and_sweep_builds_its_config(tmp_path):
    """Config building only: each run of each suite (first seed) and each sweep's values."""
    built = 0
    for path in sorted(glob.glob(os.path.join(REPO, "benchmarks", "suites", "*.yaml"))):
        suite = benchmark.load_suite(path)
        shared = benchmark.shared_config(suite)
        for entry in suite["runs"]:
            settings = dict(shared, **entry["config"], seed=suite["seeds"][0])
            settings["data_path"] = str(tmp_path)
            try:
                Config(model=entry["model"], dataset=suite["dataset"], config_dict=settings)
            except ConfigError as err:
                pytest.fail(f"{path}, run {entry['label']}: {err}")
            built += 1
    for path in sorted(glob.glob(os.path.join(REPO, "sweeps", "*"))):
        model = {"eimf": "EIMF", "llm4sbr": "LLM4SBR", "sasrec": "SASRec"}[
            os.path.basename(path).split(".")[0]
        ]
        settings = dict(sweep_values(path), data_path=str(tmp_path))
        try:
            Config(model=model, dataset="ml-100k", config_dict=settings)
        except ConfigError as err:
            pytest.fail(f"{path}: {err}")
        built += 1
    assert built > 100


def test_every_key_of_ours_declares_a_type_its_default_has():
    root = properties_dir()
    for path in [
        os.path.join(root, "overall.yaml"),
        *glob.glob(os.path.join(root, "model", "*.yaml")),
    ]:
        defaults = yaml.safe_load(open(path, encoding="utf-8"))
        types = keys.declared_types(path)
        assert sorted(types) == sorted(defaults), f"{path}: keys without a (type) tag"
        for key, tag in types.items():
            assert keys.type_error(key, defaults[key], tag, defaults[key]) is None, (path, key)
            assert not keys.is_secret_key(key), key


# ---------------------------------------------------------------- secrets (item 5)


def test_a_secret_in_the_config_is_refused_without_echoing_it(monkeypatch, capsys, tmp_path):
    advice = "put it in an environment variable and name that variable in llm_api_key_env"
    out = cli_error(monkeypatch, capsys, "--model=EIMF", f"--llm_api_key={SECRET}")
    assert "'llm_api_key' (on the command line)" in out and advice in out
    out += cli_error(monkeypatch, capsys, "--model=EIMF", f"--llm_api_key_env={SECRET}")
    assert "must be the NAME of the environment variable" in out
    assert SECRET not in out
    assert not os.listdir(tmp_path), "nothing was logged or saved"
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(f"hf_token: {SECRET}\n")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(ConfigError) as err:
        Config(model="SASRec", dataset="synth", config_file_list=[str(secrets_file)])
    assert f"'hf_token' (in config file '{secrets_file}')" in str(err.value)
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError, match="looks like a secret"):
        Config(model="SASRec", config_dict={"strict_keys": False, "db_password": SECRET})
    for name in ("llm_max_new_tokens", "token_num_threhold", "llm_api_key_env"):
        assert not keys.is_secret_key(name), name


def test_the_api_key_reaches_the_server_and_no_file(semantic_config, tmp_path, monkeypatch):
    """A tiny EIMF run whose semantic step asks a local server with the key from the
    environment: the server sees the key; no log, TensorBoard event file, checkpoint, cache
    or semantic file holds it."""
    seen = []

    def respond(body, headers):
        seen.append(headers.get("Authorization"))
        if headers.get("Authorization") != f"Bearer {SECRET}":
            return 401, b'{"error": "bad key"}'
        return 200, chat_payload('["space adventure", "quiet drama"]')

    monkeypatch.setenv("RECBOLE_LLM_TEST_KEY", SECRET)
    with ChatServer(respond) as server:
        settings = dict(
            semantic_config,
            llm_backend="openai",
            llm_model="served-model",
            llm_base_url=server.url,
            llm_api_key_env="RECBOLE_LLM_TEST_KEY",
            state="INFO",  # the config dump goes to the log
        )
        run_recbole_llm(model="EIMF", dataset="synth", config_dict=settings)
    assert seen and all(auth == f"Bearer {SECRET}" for auth in seen)
    written = [
        p for p in glob.glob(str(tmp_path / "**" / "*"), recursive=True) if os.path.isfile(p)
    ]
    kinds = {os.path.basename(os.path.dirname(p)) for p in written}
    assert {"saved", "cache"} <= kinds and any("tfevents" in p for p in written), kinds
    leaked = [p for p in written if SECRET.encode() in open(p, "rb").read()]
    assert not leaked, leaked


# ---------------------------------------------------------------- messages (item 6)


@pytest.fixture
def own_synth(synthetic_root, tmp_path):
    """A private copy of ``synth`` to break, and settings that read it."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic_root, "synth"), root / "synth")
    return root / "synth", dict(FAST, data_path=str(root), checkpoint_dir=str(tmp_path / "saved"))


def dataset_error(model, settings):
    with pytest.raises(DatasetError) as err:
        create_dataset(Config(model=model, dataset="synth", config_dict=settings))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_broken_atomic_files_are_named(own_synth):
    folder, settings = own_synth
    inter = folder / "synth.inter"
    original = inter.read_text()
    inter.write_text("")
    assert f"'{inter}' is empty (0 bytes)" in dataset_error("SASRec", settings)
    inter.write_text(original.splitlines()[0] + "\n")
    assert f"'{inter}' has a header but no interactions" in dataset_error("SASRec", settings)
    inter.write_text(
        "".join("\t".join(line.split("\t")[:3]) + "\n" for line in original.splitlines())
    )
    message = dataset_error("SASRec", dict(settings, load_col={"inter": ["user_id", "item_id"]}))
    assert f"'{inter}' has no time column 'timestamp'" in message
    inter.write_text(original)
    message = dataset_error("SASRec", dict(settings, load_col={"inter": ["user_id", "item_id"]}))
    assert f"load_col does not load 'timestamp' from '{inter}'" in message
    item = folder / "synth.item"
    item.write_bytes(item.read_bytes().replace(b"Galaxy", "Galax\xff".encode("latin-1"), 1))
    message = dataset_error("EIMF", dict(settings, **SYNTH_TEXT, interest_source="categories"))
    assert re.search(rf"'{re.escape(str(item))}' line \d+ is not valid utf-8 text", message)
    assert "set encoding" in message


def test_a_manifest_cut_in_half_is_named_and_regenerated(semantic_config):
    settings = dict(semantic_config, interest_source="categories")
    config = Config(model="EIMF", dataset="synth", config_dict=settings)
    pipeline.run_pipeline(config, "eimf")
    manifest = files.manifest_path(config, "eimf")
    text = open(manifest, encoding="utf-8").read()
    open(manifest, "w", encoding="utf-8").write(text[: len(text) // 2])
    stopped = Config(
        model="EIMF", dataset="synth", config_dict=dict(settings, auto_semantics=False)
    )
    with pytest.raises(SemanticsError, match=re.escape(f"'{manifest}' is not a readable manifest")):
        create_dataset(stopped)
    dataset = create_dataset(config)  # auto_semantics: made again instead of a crash
    assert dataset.semantics_manifest is not None
    assert json.load(open(manifest, encoding="utf-8"))["kind"] == "eimf"


def test_a_malformed_shared_config_of_a_suite_names_the_file(tmp_path):
    shared = tmp_path / "shared.yaml"
    shared.write_text("epochs: [1, 2\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: x\ndataset: synth\nruns: [Pop]\nconfig_files: [{shared}]\n")
    with pytest.raises(
        benchmark.SuiteError, match=re.escape(f"Cannot parse config file '{shared}'")
    ):
        benchmark.shared_config(benchmark.load_suite(str(suite)))
