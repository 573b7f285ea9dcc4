"""The semantic step end to end on synthetic data: files, cache, resume, leakage, validation."""

import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic import SESSION_FORMAT

from recbole_llm.config import Config
from recbole_llm.semantic_step import load_or_create, run_pipeline
from recbole_llm.semantics import files
from recbole_llm.semantics.backends import TransformersBackend
from recbole_llm.semantics.files import SemanticsError
from recbole_llm.semantics.settings import settings


def eimf_config(semantic_config, **extra):
    return Config(model="EIMF", dataset="synth", config_dict=dict(semantic_config, **extra))


def outputs(config, suffixes=("itemtext", "interest", "usertypical")):
    return {s: open(files.file_path(config, s), encoding="utf-8").read() for s in suffixes}


def test_eimf_step_writes_valid_files_and_reruns_from_cache(semantic_config):
    config = eimf_config(semantic_config)
    path = run_pipeline(config, "eimf")
    manifest = json.load(open(path))
    counts = manifest["counts"]
    typical = counts["typical_users"]
    assert counts["training_users"] == 60 and abs(typical - 6) <= 1  # 10 % of users, by AP
    assert manifest["generation"]["calls"] == typical == manifest["generation"]["requests"]
    assert manifest["dimensions"] == {"text": 384, "max_interests": 5}
    assert set(manifest["files"]) == {"synth.itemtext", "synth.interest", "synth.usertypical"}
    assert manifest["inputs"].keys() == {"synth.inter", "synth.item"}
    assert len(manifest["interests"]) == typical
    item_table = files.read_table(files.file_path(config, "itemtext"), "itemtext")
    assert len(item_table["iid"]) == 48 and all(len(v) == 384 for v in item_table["item_text"])
    first = outputs(config)

    rerun = json.load(open(run_pipeline(config, "eimf")))
    assert rerun["generation"]["calls"] == 0 and rerun["generation"]["cached"] == typical
    assert rerun["encoder_texts_encoded"] == 0
    assert outputs(config) == first
    # the manifest validates against the current inputs and settings
    files.read_manifest(config, "eimf", settings(config, "eimf"), "cmd")


def test_interrupted_step_resumes_to_identical_files(semantic_config, tmp_path, monkeypatch):
    clean = eimf_config(
        semantic_config, semantics_cache_dir=str(tmp_path / "clean-cache"), llm_batch_size=2
    )
    run_pipeline(clean, "eimf")

    resumed_data = tmp_path / "resumed"
    shutil.copytree(os.path.join(semantic_config["data_path"], "synth"), resumed_data / "synth")
    for name in os.listdir(resumed_data / "synth"):
        if not name.endswith((".inter", ".item")):
            os.remove(resumed_data / "synth" / name)
    resumed = eimf_config(
        semantic_config,
        data_path=str(resumed_data),
        semantics_cache_dir=str(tmp_path / "resumed-cache"),
        llm_batch_size=2,
    )
    real_generate = TransformersBackend.generate
    calls = []

    def interrupted(self, batch, decoding):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second batch is in flight
        return real_generate(self, batch, decoding)

    monkeypatch.setattr(TransformersBackend, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(resumed, "eimf")
    assert not os.path.exists(files.manifest_path(resumed, "eimf")), "nothing half-written"
    monkeypatch.setattr(TransformersBackend, "generate", real_generate)
    manifest = json.load(open(run_pipeline(resumed, "eimf")))
    typical = manifest["counts"]["typical_users"]
    assert manifest["generation"]["cached"] == 2 and manifest["generation"]["calls"] == typical - 2
    assert outputs(resumed) == outputs(clean)


def test_eimf_prompts_hold_only_each_users_training_items(semantic_config):
    """Leakage: a user's prompt lists only its own training interactions (never its own
    validation or test items), checked per user against the raw file."""
    from recbole_llm.semantic_step import plain_dataset as _plain_dataset
    from recbole_llm.semantics.history import training_histories

    config = eimf_config(semantic_config)
    histories = training_histories(_plain_dataset(config).build()[0])
    raw = pd.read_csv(os.path.join(config["data_path"], "synth.inter"), sep="\t", dtype=str)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw["timestamp"] = raw["timestamp"].astype(float)
    for user, events in raw.sort_values(["user_id", "timestamp"]).groupby("user_id"):
        sequence = list(events["item_id"])
        assert histories[user] == sequence[:-2], f"user {user}"

    manifest = json.load(open(run_pipeline(config, "eimf")))
    from recbole_llm.semantics import prompts
    from recbole_llm.semantics.text import item_texts

    texts = item_texts(config, sorted({i for h in histories.values() for i in h})).texts
    for user in manifest["interests"]:
        listed = histories[user][-config["prompt_max_items"] :]
        prompt = prompts.eimf_messages([texts[i] for i in listed], 5, "item", "interacted with")
        held_out = set(raw[raw.user_id == user].sort_values("timestamp")["item_id"][-2:]) - set(
            histories[user]
        )
        for item in held_out:
            assert texts[item] not in prompt[-1]["content"]


def test_llm4sbr_prompts_hold_only_items_before_each_target(tiny_llm, tmp_path, fast_config):
    from synthetic import write_synthetic_sessions

    from recbole_llm.semantic_step import plain_dataset as _plain_dataset
    from recbole_llm.semantics import prompts
    from recbole_llm.semantics.history import sample_prefixes

    write_synthetic_sessions(str(tmp_path / "data"))
    config = Config(
        model="SASRec",
        dataset="synth-session",
        config_dict={
            "data_path": str(tmp_path / "data"),
            **SESSION_FORMAT,
            "text_fields": ["movie_title", "class"],
            "llm_model": tiny_llm,
            "llm_max_new_tokens": 6,
            "prompt_max_items": 3,
            "state": "ERROR",
        },
    )
    parts = _plain_dataset(config).build()
    for part, name in zip(parts, ("train", "valid", "test")):
        raw = pd.read_csv(
            os.path.join(config["data_path"], f"synth-session.{name}.inter"), sep="\t", dtype=str
        )
        raw.columns = [c.split(":")[0] for c in raw.columns]
        prefixes = sample_prefixes(part, "session_id")
        for session, items, target in zip(raw.session_id, raw.item_id_list, raw.item_id):
            assert (
                prefixes[session] == items.split()
            ), f"sample {session}: only items before {target}"

    path = run_pipeline(config, "llm4sbr")
    manifest = json.load(open(path))
    assert manifest["counts"]["samples"] == sum(len(p) for p in parts)
    assert manifest["generation"]["requests"] == 2 * manifest["counts"]["samples"]
    listing = [("Galaxy Robot 1", "1")]
    long, short = prompts.llm4sbr_messages(listing, "long"), prompts.llm4sbr_messages(
        listing, "short"
    )
    assert "1. Galaxy Robot 1_1" in long[0]["content"] and "long-term" in long[0]["content"]
    assert (
        "short-term" in short[0]["content"] and "Only output the item name" in short[0]["content"]
    )
    assert manifest["files"]["synth-session.intent"]["form"] == "compact"
    table = files.read_table(
        files.file_path(config, "intent"), files.intent_header(["long", "short"], "compact")
    )
    assert len(table["sid"]) == manifest["counts"]["samples"]
    assert all(len(v) == 5 and np.isfinite(v).all() for v in table["long_intent_weights"])
    assert all(len(set(v)) == 5 for v in table["long_intent_items"])


def test_the_suggested_command_makes_the_semantics_this_run_reads():
    from recbole_llm.semantics.settings import command

    plain = {"dataset": "ml-100k", "semantics_dir": None, "interest_source": "llm"}
    assert command(plain, "eimf") == (
        "python run_recbole_llm.py --model=EIMF --dataset=ml-100k --semantics"
    )
    control = {"dataset": "s", "semantics_dir": "control", "intent_source": "last_item"}
    assert command(control, "llm4sbr") == (
        "python run_recbole_llm.py --model=LLM4SBR --dataset=s --semantics "
        "--semantics_dir=control --intent_source=last_item"
    )


def test_validation_names_the_file_and_what_to_do(semantic_config, caplog):
    config = eimf_config(semantic_config)
    wanted = settings(config, "eimf")
    with pytest.raises(SemanticsError, match=r"--model=EIMF --dataset=synth --semantics"):
        files.read_manifest(
            config,
            "eimf",
            wanted,
            "python run_recbole_llm.py --model=EIMF --dataset=synth --semantics",
        )
    run_pipeline(config, "eimf")

    interest = files.file_path(config, "interest")
    original = open(interest, encoding="utf-8").read()
    with open(interest, "a", encoding="utf-8") as f:
        f.write("1\t1\t" + " ".join(["0"] * 5 * 384) + "\n")
    with pytest.raises(SemanticsError, match=r"synth.interest' is missing or was changed"):
        files.read_manifest(config, "eimf", wanted, "cmd")
    with open(interest, "w", encoding="utf-8") as f:
        f.write(original)

    changed = eimf_config(semantic_config, typical_ratio=0.2)
    with pytest.raises(SemanticsError, match=r"other settings \(typical_ratio\)"):
        files.read_manifest(changed, "eimf", settings(changed, "eimf"), "cmd")
    # another backend running the same weights reads the same files (as it reads the replies)
    llama = eimf_config(semantic_config, llm_backend="llama_cpp")
    files.read_manifest(llama, "eimf", settings(llama, "eimf"), "cmd")

    with open(os.path.join(config["data_path"], "synth.inter"), "a", encoding="utf-8") as f:
        f.write("1\t2\t5\t1999999999\n")
    # regenerating reuses the cached replies of unchanged prompts: no --refresh
    with pytest.raises(SemanticsError, match=r"Stale semantics: 'synth.inter' changed") as err:
        files.read_manifest(config, "eimf", wanted, "cmd")
    assert str(err.value).endswith("Regenerate with: cmd")
    # auto_semantics replaces stale files, and says so as a warning (a first run: INFO)
    caplog.set_level(logging.INFO)
    load_or_create(config, "eimf")
    warned = [r for r in caplog.records if "running the semantic step now" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING
    assert "Stale semantics: 'synth.inter' changed" in warned[0].getMessage()
    files.read_manifest(config, "eimf", wanted, "cmd")  # current again


def test_bad_vectors_and_unknown_ids_are_errors(semantic_config, tmp_path):
    config = eimf_config(semantic_config)
    run_pipeline(config, "eimf")
    path = files.file_path(config, "itemtext")
    table = files.read_table(path, "itemtext")
    with pytest.raises(SemanticsError, match="expected 384"):
        files.stack_vectors(path, "item_text", [table["item_text"][0][:10]], 384)
    bad = table["item_text"][0].copy()
    bad[3] = np.nan
    with pytest.raises(SemanticsError, match="NaN or inf"):
        files.stack_vectors(path, "item_text", [bad], 384)

    from recbole_llm.data.dataset import EIMFDataset

    files.write_table(
        path,
        "itemtext",
        [("no-such-item", table["item_text"][0])] + list(zip(table["iid"], table["item_text"])),
    )
    manifest_file = files.manifest_path(config, "eimf")
    manifest = json.load(open(manifest_file))
    files.write_manifest(
        config, "eimf", {k: v for k, v in manifest.items() if k not in ("format", "kind")}
    )
    with pytest.raises(SemanticsError, match=r"unknown to dataset 'synth' \(e.g. 'no-such-item'\)"):
        EIMFDataset(config)


def test_missing_semantics_are_created_for_training_or_named(semantic_config):
    config = eimf_config(semantic_config, auto_semantics=False)
    with pytest.raises(
        SemanticsError, match=r"Create them with: python run_recbole_llm.py --model=EIMF"
    ):
        load_or_create(config, "eimf")
    config = eimf_config(semantic_config)
    manifest = load_or_create(config, "eimf")
    assert manifest["generation"]["requests"] == manifest["counts"]["typical_users"] > 0
    assert os.path.exists(files.file_path(config, "usertypical"))


def test_llm_free_controls(semantic_config):
    categories = json.load(
        open(run_pipeline(eimf_config(semantic_config, interest_source="categories"), "eimf"))
    )
    assert categories["generation"] is None and categories["llm"] is None
    assert (
        categories["counts"]["typical_users_from_categories"]
        == categories["counts"]["typical_users"]
    )
    genres = {"Action", "Comedy", "Drama", "Sci-Fi"}
    assert all(
        set(v["interests"]) <= genres and v["interests"] for v in categories["interests"].values()
    )

    config = eimf_config(semantic_config, typical_assignment="shuffled")
    run_pipeline(config, "eimf")
    shuffled = files.read_table(files.file_path(config, "usertypical"), "usertypical")
    clustered_config = eimf_config(semantic_config)
    run_pipeline(clustered_config, "eimf")
    clustered = files.read_table(files.file_path(clustered_config, "usertypical"), "usertypical")
    assert (
        sorted(shuffled["tuid"]) == sorted(clustered["tuid"])
        and shuffled["tuid"] != clustered["tuid"]
    )


def test_eimf_dataset_attaches_semantics_to_batches(semantic_config):
    from recbole_llm.data.dataset import INTEREST_ROW
    from recbole_llm.data.utils import data_preparation
    from recbole_llm.quick_start import create_dataset

    config = eimf_config(semantic_config, interest_source="categories")
    dataset = create_dataset(config)
    assert type(dataset).__name__ == "EIMFDataset" and dataset.has_semantics
    assert tuple(dataset.item_text_matrix().shape) == (49, 384)
    assert float(dataset.item_text_matrix()[0].abs().sum()) == 0.0
    train, _, test = data_preparation(config, dataset)
    for loader in (train, test):
        batch = next(iter(loader))
        batch = batch[0] if isinstance(batch, tuple) else batch
        rows = batch[INTEREST_ROW]
        assert rows.dim() == 1 and len(rows) == len(batch[config["USER_ID_FIELD"]])
        interests, mask = dataset.interest_tables()
        assert tuple(interests.shape[1:]) == (5, 384) and mask.dtype == torch.bool
        assert (rows > 0).all() and mask[rows].any(dim=1).all(), "every user has interests"
    # stored once per typical user (plus row 0, none), not copied per user
    assert len(interests) == len(set(dataset._user_row.tolist()) - {0}) + 1
