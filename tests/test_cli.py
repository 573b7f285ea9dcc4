"""recbole-llm and its commands: run_recbole_llm.py from another working directory with
RecBole's passthrough flags, each command's help, dispatch, --key=value reaching the config,
and one-line errors with suggestions."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from recbole_llm import assets, cli, hyper
from recbole_llm.bench import cli as bench_cli
from recbole_llm.config import Config
from recbole_llm.data import prepare

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


# ---------------------------------------------------------------- recbole-llm's commands


def one_line_error(capsys, *argv):
    """The single ``error: ...`` line ``recbole-llm argv`` prints (status 2)."""
    with pytest.raises(SystemExit) as stop:
        cli.main(list(argv))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def test_help_lists_every_command_in_one_line_each(capsys):
    assert cli.main(["--help"]) is None
    out = capsys.readouterr().out
    for name, (summary, _, _) in cli.COMMANDS.items():
        (line,) = [line for line in out.splitlines() if line.strip().startswith(name + " ")]
        assert line.split(None, 1)[1] == summary
    assert list(cli.COMMANDS) == ["train", "semantics", "sweep", "bench", "prepare", "assets"]


@pytest.mark.parametrize("name", ["train", "semantics", "sweep", "bench", "prepare", "assets"])
def test_each_command_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {os.path.basename(sys.argv[0])} {name} ")
    assert "--debug" in out
    wanted = {
        "train": ["--model", "--nproc", "--semantics", "--key=value"],
        "semantics": ["--model", "--refresh", "--key=value"],
        "sweep": ["--params_file", "--algo", "sweeps/"],
        "bench": ["suite", "--report-only", "--only"],
        "prepare": ["--data_path", "--source_dir", "ml-1m"],
        "assets": ["hashes"],
    }[name]
    for fragment in wanted:
        assert fragment in out, (name, fragment)


@pytest.fixture
def calls(monkeypatch):
    """Each heavy function a command runs, replaced by a recorder."""
    seen = []

    def recorder(name, result=None):
        def record(*args, **kwargs):
            seen.append((name, args, kwargs, list(sys.argv)))
            return result

        return record

    monkeypatch.setattr(cli, "run", recorder("run", {"test_result": {}}))
    monkeypatch.setattr(cli, "run_semantics", recorder("run_semantics", "manifest.json"))
    monkeypatch.setattr(hyper, "run_sweep", recorder("run_sweep", ([], "table", "best.yaml")))
    monkeypatch.setattr(bench_cli, "run_suite", recorder("run_suite", {}))
    monkeypatch.setattr(bench_cli, "write_report", recorder("write_report", (None, "report")))
    monkeypatch.setattr(prepare, "prepare_dataset", recorder("prepare_dataset", os.getcwd()))
    monkeypatch.setattr(assets, "main", recorder("assets", 1))
    return seen


def write_suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "dataset": "synth", "runs": ["Pop"]}))
    return str(path)


def test_each_command_runs_its_own_function(calls, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["recbole-llm"])
    suite = write_suite(tmp_path)
    assert cli.main(["--model=Pop", "--dataset=synth"]) == {"test_result": {}}  # train: default
    assert cli.main(["train", "--model=Pop", "--nproc=2"]) == {"test_result": {}}
    assert cli.main(["semantics", "--model=LLM4SBR", "--refresh"]) == "manifest.json"
    assert cli.main(["--model=EIMF", "--semantics"]) == "manifest.json"  # the old flag
    assert cli.main(["sweep", "--model=Pop", "--params_file=s.yaml", "--algo=random"]) == []
    assert cli.main(["bench", suite, "--only", "Pop"]) is None
    assert cli.main(["prepare", "ml-100k", "--data_path=elsewhere", "--force"]) == os.getcwd()
    assert cli.main(["assets"]) == 1
    names = [name for name, _, _, _ in calls]
    assert names == [
        "run",
        "run",
        "run_semantics",
        "run_semantics",
        "run_sweep",
        "run_suite",
        "write_report",
        "prepare_dataset",
        "assets",
    ]
    _, (model, dataset), kwargs, _ = calls[1]
    assert (model, dataset, kwargs["nproc"]) == ("Pop", None, 2)
    assert calls[2][1] == ("LLM4SBR", None) and calls[2][2]["refresh"] is True
    assert calls[4][1][:3] == ("Pop", None, "s.yaml") and calls[4][2]["algo"] == "random"
    assert calls[6][0] == "write_report" and calls[5][2]["only"] == ["Pop"]
    assert calls[7][1] == ("ml-100k", "elsewhere") and calls[7][2]["force"] is True
    assert sys.argv == ["recbole-llm"], "the command line is restored after each command"


def test_key_values_reach_the_config_of_every_command(calls, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["recbole-llm"])
    built = []

    def build(model, dataset=None, config_file_list=None, **kwargs):
        built.append(Config(model=model, dataset=dataset, config_file_list=config_file_list))

    monkeypatch.setattr(cli, "run", build)
    monkeypatch.setattr(cli, "run_semantics", build)
    cli.main(["--model=SASRec", "--dataset=synth", "--epochs=1", "--learning_rate=0.01"])
    cli.main(["semantics", "--model=EIMF", "--dataset=synth", "--typical_ratio=0.3", "--debug"])
    train, semantics = built
    assert train["epochs"] == 1 and train["learning_rate"] == 0.01
    assert semantics["typical_ratio"] == 0.3 and semantics["model"] == "EIMF"
    assert "debug" not in semantics.cmd_config_dict, "our own flags are not config keys"

    cli.main(["sweep", "--model=Pop", "--params_file=s.yaml", "--epochs=1", "--topk=[5]"])
    assert calls[-1][2]["config_dict"] == {"epochs": 1, "topk": [5]}

    cli.main(["bench", write_suite(tmp_path), "--gpu_id=1", "--show_progress=False"])
    (running,) = [args[0] for name, args, _, _ in calls if name == "run_suite"]
    assert running["runs"][0]["config"] == {"gpu_id": 1, "show_progress": False}
    (reported,) = [args[0] for name, args, _, _ in calls if name == "write_report"]
    assert reported["runs"][0]["config"] == {}, "the report shows the suite's own config"


def test_mistakes_are_one_line_with_a_suggestion(calls, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["recbole-llm"])
    err = one_line_error(capsys, "trian", "--model=EIMF")
    assert "unknown command 'trian'; did you mean train?" in err and "sweep" in err
    err = one_line_error(capsys, "prepare", "ml-100k", "--forse")
    assert "unexpected argument '--forse'; did you mean --force?" in err
    err = one_line_error(capsys, "--model=EIMF", "--semantic")
    assert "did you mean --semantics?" in err
    err = one_line_error(capsys, "--model=Pop", "--epochs", "1")
    assert "unexpected argument '--epochs'" in err and "--epochs=VALUE" in err
    err = one_line_error(capsys, "sweep", "--model=Pop", "--algo=gird", "--params_file=s.yaml")
    assert "invalid choice: 'gird'" in err and "sweep --help" in err
    err = one_line_error(capsys, "bench", "suite.yaml", "--epochs=1")
    assert "--epochs:" in err and "suite file's config" in err
    err = one_line_error(capsys, "bench", "suite.yaml", "--devcie=cuda")
    assert "did you mean --device?" in err
    err = one_line_error(capsys, "assets", "--all")
    assert "unexpected argument '--all'" in err
    assert calls == [], "nothing ran"


def test_the_console_script_exits_with_a_status_for_the_shell():
    """setup.py's entry point, run as pip's console-script template runs it."""
    setup = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
    assert '"recbole-llm=recbole_llm.cli:console"' in setup
    template = "import sys; from recbole_llm.cli import console; sys.exit(console())"
    env = dict(os.environ, PYTHONPATH=REPO)
    for args, status in [(["--help"], 0), (["assets", "--all"], 2), (["trian"], 2)]:
        result = subprocess.run(
            [sys.executable, "-c", template, *args], env=env, capture_output=True, text=True
        )
        assert result.returncode == status, result.stderr[-2000:]
        if status == 2:
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_the_scripts_are_the_same_commands(tmp_path):
    """The scripts the docs and CI name call the same code as recbole-llm."""
    env = dict(os.environ, PYTHONPATH=REPO)
    for script, fragment in [
        ("run_recbole_llm.py", "semantics"),
        ("run_hyper.py", "--params_file"),
        (os.path.join("benchmarks", "run_suite.py"), "--report-only"),
        (os.path.join("dataset", "prepare_amazon-beauty.py"), "--source_dir"),
    ]:
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, script), "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and fragment in result.stdout, (script, result.stderr)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "dataset", "prepare_ml-100k.py"), "--forse"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "did you mean --force?" in result.stderr
    assert result.stderr.count("\n") == 1
