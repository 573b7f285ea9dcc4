"""The heartbeat plugin names a long-running test while it runs."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_pytest(tmp_path, seconds, every):
    (tmp_path / "test_slow.py").write_text(
        f"import time\n\ndef test_slow():\n    time.sleep({seconds})\n\ndef test_fast():\n    pass\n"
    )
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {HERE!r})\nfrom heartbeat import pytest_configure\n"
    )
    env = dict(os.environ, RECBOLE_LLM_TEST_HEARTBEAT=str(every))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_long_test_is_named_while_it_runs(tmp_path):
    out = run_pytest(tmp_path, seconds=3.5, every=1)
    lines = [line for line in out.splitlines() if "still running" in line]
    assert lines and all("test_slow.py::test_slow" in line for line in lines), out
    assert "test_fast" not in out.split("passed")[0].replace("test_slow", "")


def test_quick_tests_and_zero_stay_silent(tmp_path):
    assert "still running" not in run_pytest(tmp_path, seconds=0.1, every=1)
    assert "still running" not in run_pytest(tmp_path, seconds=2.5, every=0)
