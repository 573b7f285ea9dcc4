"""A user's own atomic files in a format of their own (Amazon-like: title, categories, brand)
run through the command line with no load_col (docs/usage.md, "Bring your own dataset")."""

import os
import random
import sys

import pytest
from synthetic import make_items, make_sequences

from recbole_llm import cli
from recbole_llm.config import Config


def write_shop(root, name="shop"):
    """``<name>.inter`` (user_id, item_id, rating, timestamp) and ``<name>.item`` (title,
    categories, brand), with ids and columns unlike our other datasets."""
    rng = random.Random(1)
    items = make_items(40, 4, rng)
    folder = os.path.join(root, name)
    os.makedirs(folder)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, events in make_sequences(50, items, 4, 8, 16, rng).items():
            for item, rating, stamp in events:
                f.write(f"A{user:04d}\tB{item:05d}\t{rating}.0\t{stamp}\n")
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\n")
        for item, (title, _, genres) in items.items():
            f.write(f"B{item:05d}\t{title}\t{' '.join(genres)}\tbrand{item % 3}\n")
    return str(root)


def test_own_dataset_runs_eimf_without_load_col(tmp_path, tiny_llm, monkeypatch):
    root = write_shop(tmp_path / "data")
    args = [
        "run_recbole_llm.py",
        "--model=EIMF",
        "--dataset=shop",
        f"--data_path={root}",
        "--text_fields=['title','categories']",
        f"--llm_model={tiny_llm}",
        "--llm_max_new_tokens=6",
        "--epochs=1",
        "--hidden_size=16",
        "--embedding_size=16",
        "--MAX_ITEM_LIST_LENGTH=10",
        "--show_progress=False",
        "--state=ERROR",
        f"--checkpoint_dir={tmp_path / 'saved'}",
    ]
    monkeypatch.setattr(sys, "argv", args)
    result = cli.main()
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_own_dataset_loads_the_columns_it_needs(tmp_path):
    root = write_shop(tmp_path / "data")
    config = Config(
        model="SASRec",
        dataset="shop",
        config_dict={"data_path": root, "text_fields": ["title", "categories"]},
    )
    assert config["load_col"] == {
        "inter": ["user_id", "item_id", "rating", "timestamp"],
        "item": ["item_id", "title", "categories"],
    }
    # a load_col the user set is theirs, untouched
    mine = {"inter": ["user_id", "item_id", "timestamp"]}
    config = Config(
        model="SASRec", dataset="shop", config_dict={"data_path": root, "load_col": mine}
    )
    assert config["load_col"] == mine


def test_own_dataset_without_a_text_column_fails_in_one_line(tmp_path, monkeypatch, capsys):
    root = write_shop(tmp_path / "data")
    args = ["run_recbole_llm.py", "--model=EIMF", "--dataset=shop", f"--data_path={root}"]
    monkeypatch.setattr(sys, "argv", args + ["--text_fields=['name','categories']"])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: '") and "has no column 'name' named by text_fields" in err[-1]
    assert "set text_fields" in err[-1] and "Traceback" not in "\n".join(err)
