"""run_recbole_llm.py from another working directory, with RecBole's passthrough flags."""

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = os.path.join(REPO, "run_recbole_llm.py")


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_trains_from_another_directory_with_passthrough_flags(synthetic_root, tmp_path):
    config_file = tmp_path / "synth.yaml"
    config_file.write_text("load_col:\n  inter: [user_id, item_id, rating, timestamp]\n")
    result = run_cli(
        [
            "--model=SASRec",
            f"--config_files={config_file}",
            "--dataset=synth",
            f"--data_path={synthetic_root}",
            "--epochs=1",
            "--MAX_ITEM_LIST_LENGTH=5",
            "--topk=[5,20]",
            "--valid_metric=NDCG@5",
            "--show_progress=False",
            f"--checkpoint_dir={tmp_path / 'ckpt'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert "best valid" in log and "test result" in log
    assert "recall@5" in log and "recall@20" in log and "recall@10" not in log
    assert "Loading model structure and parameters from" in log
    assert "MAX_ITEM_LIST_LENGTH = 5" in log
    assert os.listdir(tmp_path / "ckpt")
    assert (tmp_path / "log").is_dir(), "RecBole's logs go to the working directory"


def test_cli_unknown_model_suggests_names(tmp_path):
    result = run_cli(["--model=GRU4Recc", "--dataset=synth"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Unknown model 'GRU4Recc'" in result.stderr and "GRU4Rec" in result.stderr
