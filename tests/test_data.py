"""Data root, dataset preparation, and reuse of pickled datasets."""

import os
import pickle
import shutil

import pytest

from recbole_llm import utils
from recbole_llm.config import Config
from recbole_llm.data import prepare
from recbole_llm.data.utils import data_preparation
from recbole_llm.quick_start import create_dataset


def test_missing_unknown_dataset_fails_with_what_to_do(tmp_path):
    config = Config(model="SASRec", dataset="nowhere", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError) as err:
        create_dataset(config)
    message = str(err.value)
    assert os.path.join(str(tmp_path), "nowhere", "nowhere.inter") in message
    assert "ml-100k" in message and "ml-1m" in message


def test_ml_100k_is_prepared_from_recbole_on_first_use(tmp_path):
    config = Config(
        model="Pop",
        dataset="ml-100k",
        config_dict={"data_path": str(tmp_path), "state": "ERROR"},
    )
    dataset = create_dataset(config)
    assert dataset.inter_num == 100_000 and dataset.user_num == 944
    assert sorted(os.listdir(tmp_path / "ml-100k")) == [
        f"ml-100k.{s}" for s in ["inter", "item", "kg", "link", "user"]
    ]


def test_auto_prepare_off_names_the_prepare_command(tmp_path):
    config = Config(
        model="Pop",
        dataset="ml-1m",
        config_dict={"data_path": str(tmp_path), "auto_prepare": False},
    )
    with pytest.raises(FileNotFoundError, match=r"python dataset/prepare_ml-1m.py"):
        create_dataset(config)


def test_ml_1m_prepare_step_and_loading(tmp_path):
    folder = prepare.main("ml-1m", ["--data_path", str(tmp_path)])
    with open(os.path.join(folder, "ml-1m.item"), encoding="utf-8") as f:
        header, first = f.readline().rstrip("\n"), f.readline().rstrip("\n")
    assert header.split("\t") == [
        "item_id:token",
        "movie_title:token_seq",
        "release_year:token",
        "genre:token_seq",
    ]
    assert first.split("\t") == ["1", "Toy Story", "1995", "Animation Children's Comedy"]
    config = Config(
        model="Pop",
        dataset="ml-1m",
        config_dict={
            "data_path": str(tmp_path),
            "state": "ERROR",
            "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "genre"]},
        },
    )
    dataset = create_dataset(config)
    assert (dataset.inter_num, dataset.user_num, dataset.item_num) == (1_000_209, 6_041, 3_884)
    assert "genre" in dataset.item_feat


def test_prepare_never_overwrites_a_users_inter_file(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\n1\t1\n")
    prepare.prepare_dataset("ml-100k", str(tmp_path))
    assert (folder / "ml-100k.inter").read_text() == "user_id:token\titem_id:token\n1\t1\n"


@pytest.fixture
def own_copy(synthetic_root, tmp_path):
    """A private copy of the synthetic dataset that a test may modify."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic_root, "synth"), root / "synth")
    return str(root)


def _config(fast_config, root, **extra):
    return Config(
        model="SASRec",
        dataset="synth",
        config_dict=dict(fast_config, data_path=root, save_dataset=True, **extra),
    )


def _mark_pickle(config):
    """Plant a marker in the pickled dataset: a reused dataset carries it, a rebuilt one not."""
    path = os.path.join(config["checkpoint_dir"], "synth-SequentialDataset.pth")
    with open(path, "rb") as f:
        dataset = pickle.load(f)
    dataset.marker = "from pickle"
    with open(path, "wb") as f:
        pickle.dump(dataset, f)


def test_saved_dataset_is_reused_only_while_its_files_and_our_keys_are_unchanged(
    fast_config, own_copy, monkeypatch
):
    import recbole_llm.data.utils as data_utils

    first = create_dataset(_config(fast_config, own_copy))
    _mark_pickle(first.config)
    assert getattr(create_dataset(_config(fast_config, own_copy)), "marker", None) == "from pickle"

    # one of our dataset keys changes: the pickle is not reused (a made-up key: strict_keys off)
    monkeypatch.setattr(data_utils, "DATASET_ARGUMENTS", ["dataset_class", "our_key"])
    made_up = {"our_key": "other value", "strict_keys": False}
    changed = create_dataset(_config(fast_config, own_copy, **made_up))
    assert not hasattr(changed, "marker")

    # an atomic file beside the dataset changes with the same keys: not reused either
    _mark_pickle(first.config)
    with open(os.path.join(own_copy, "synth", "synth.inter"), "a", encoding="utf-8") as f:
        f.write("1\t1\t5\t1999999999\n")
    rebuilt = create_dataset(_config(fast_config, own_copy, **made_up))
    assert not hasattr(rebuilt, "marker")
    assert rebuilt.inter_num == first.inter_num + 1


def test_saved_dataloaders_are_rebuilt_when_files_change(fast_config, own_copy):
    config = _config(fast_config, own_copy, save_dataloaders=True)
    train, _, _ = data_preparation(config, create_dataset(config))
    with open(os.path.join(own_copy, "synth", "synth.inter"), "a", encoding="utf-8") as f:
        f.write("1\t1\t5\t1999999999\n")
    config = _config(fast_config, own_copy, save_dataloaders=True)
    train_again, _, _ = data_preparation(config, create_dataset(config))
    assert len(train_again.dataset) == len(train.dataset) + 1


def test_atomic_write_leaves_no_temporary_file_and_plain_permissions(tmp_path):
    path = tmp_path / "sub" / "table.txt"
    utils.atomic_write(str(path), lambda f: f.write("a\n"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "a\n" and os.stat(path).st_mode & 0o777 == 0o666 & ~umask

    def fail(f):
        f.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        utils.atomic_write(str(path), fail)
    assert path.read_text() == "a\n" and os.listdir(path.parent) == ["table.txt"]


def test_a_session_subset_keeps_whole_samples_of_the_full_dataset(tmp_path):
    """``max_samples`` keeps a fixed random subset of the full dataset's samples (same item
    lists and targets, still in time order, the same on every build), split 80/10/10; the
    LLM-size study relies on this to reuse ml-100k-session's replies for its 1k subset."""
    from synthetic import write_synthetic_dataset

    from recbole_llm.data.sessions import write_session_dataset

    source = write_synthetic_dataset(str(tmp_path), "synth")

    def samples(name, max_samples=None):
        folder = str(tmp_path / name)
        stats = write_session_dataset(source, "synth", folder, name, max_samples=max_samples)
        rows = []
        for part in ("train", "valid", "test"):
            with open(os.path.join(folder, f"{name}.{part}.inter"), encoding="utf-8") as f:
                next(f)
                rows += [tuple(line.rstrip("\n").split("\t")[1:]) for line in f]
        return stats, rows

    _, full = samples("full")
    sub_stats, sub = samples("sub", max_samples=40)
    assert len(full) > 40 and len(sub) == 40 and sub_stats["subset_of"] == len(full)
    assert (sub_stats["train"], sub_stats["valid"], sub_stats["test"]) == (32, 4, 4)
    assert set(sub) <= set(full)
    assert [float(r[2]) for r in sub] == sorted(float(r[2]) for r in sub)
    assert samples("again", max_samples=40)[1] == sub
    assert prepare.SESSION_DATASETS["ml-100k-session-1k"] == ("ml-100k", 1_000)
    assert "ml-100k-session-1k" in prepare.PREPARERS
    # the subset reads the full dataset's properties, so its prompts are the full dataset's
    configs = [
        Config(model="LLM4SBR", dataset=name, config_dict={"data_path": str(tmp_path)})
        for name in ("ml-100k-session", "ml-100k-session-1k")
    ]
    for key in ("USER_ID_FIELD", "text_fields", "llm_reply_files", "benchmark_filename"):
        assert configs[0][key] == configs[1][key] and configs[1][key], key
