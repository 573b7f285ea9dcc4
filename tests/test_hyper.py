"""YAML sweeps: parsing (every type, RecBole's line format, errors), the grid walk, outputs."""

import math

import pytest
import yaml

from recbole_llm.hyper import Param, SweepError, grid, load_params_file, params_dict, run_sweep


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_sweep_with_every_type(tmp_path):
    path = write(
        tmp_path,
        "s.yaml",
        "lr: {loguniform: [1.0e-4, 1.0e-1]}\n"
        "w: {choice: [0.0, 0.1]}\n"
        "t: {uniform: [0.05, 0.5]}\n"
        "h: {quniform: [32, 128, 32]}\n",
    )
    params = load_params_file(path)
    assert [p.name for p in params] == ["lr", "w", "t", "h"]
    lr = params[0]
    assert lr.kind == "loguniform" and lr.args == pytest.approx([math.log(1e-4), math.log(1e-1)])
    assert params_dict(params) == {
        "loguniform": {"lr": lr.args},
        "choice": {"w": [0.0, 0.1]},
        "uniform": {"t": [0.05, 0.5]},
        "quniform": {"h": [32.0, 128.0, 32.0]},
    }


def test_recbole_line_format_keeps_log_space_bounds(tmp_path):
    path = write(
        tmp_path, "s.hyper", "learning_rate loguniform -8,0\nembedding_size choice [64,96]\n# c\n"
    )
    params = load_params_file(path)
    assert params[0] == Param("learning_rate", "loguniform", [-8.0, 0.0])
    assert params[1] == Param("embedding_size", "choice", [64, 96])


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr: {lognormal: [1, 2]}\n", r"'lr': unknown distribution 'lognormal'"),
        ("lr: {loguniform: [-4, -1]}\n", r"'lr': loguniform takes real, positive bounds"),
        ("w: {choice: []}\n", r"'w': choice needs a non-empty list"),
        ("t: {uniform: [0.5, 0.1]}\n", r"'t': the lower bound 0.5 must be below"),
        ("h: {quniform: [1, 2]}\n", r"'h': needs a list of 3 numbers"),
        ("h: 5\n", r"'h' must map to one of"),
        ("lr loguniform -8\n", r"line 1: loguniform needs 2 numbers"),
        ("a choice [1,2]\nlr foo 1,2\n", r"line 2: unknown distribution 'foo'"),
        ("justoneword\n", r"line 1: expected 'name type value'"),
    ],
)
def test_bad_sweep_files_name_the_key_or_line(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        load_params_file(write(tmp_path, "bad.yaml", text))


def test_grid_walks_every_choice_in_file_order(tmp_path):
    params = load_params_file(
        write(tmp_path, "g.yaml", "a: {choice: [1, 2]}\nb: {choice: [x, y, z]}\n")
    )
    assert grid(params) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]
    with pytest.raises(SweepError, match=r"grid walks choice values only; \['c'\]"):
        grid(params + [Param("c", "uniform", [0.0, 1.0])])


def test_grid_sweep_runs_and_writes_the_table_and_best_config(tmp_path, fast_config):
    fixed = write(tmp_path, "fixed.yaml", yaml.safe_dump(fast_config))
    sweep = write(tmp_path, "s.yaml", "learning_rate: {choice: [0.0001, 0.01]}\n")
    output = str(tmp_path / "out" / "sasrec.md")
    trials, report, best_path = run_sweep(
        "SASRec", "synth", sweep, algo="grid", config_files=[fixed], output_file=output
    )
    assert [t["params"]["learning_rate"] for t in trials] == [0.0001, 0.01]
    assert open(output).read() == report and report.count("**best**") == 1
    best = yaml.safe_load(open(best_path))
    scores = [t["valid_score"] for t in trials]
    assert best["learning_rate"] == trials[scores.index(max(scores))]["params"]["learning_rate"]
    assert best["model"] == "SASRec"


def test_hyperopt_random_search_through_recbole(tmp_path, fast_config):
    fixed = write(tmp_path, "fixed.yaml", yaml.safe_dump(fast_config))
    sweep = write(tmp_path, "s.hyper", "learning_rate loguniform -8,-4\n")
    trials, _, _ = run_sweep(
        "Pop",
        "synth",
        sweep,
        algo="random",
        max_evals=2,
        config_files=[fixed],
        output_file=str(tmp_path / "r.md"),
    )
    assert len(trials) == 2
    assert all(math.exp(-8) <= t["params"]["learning_rate"] <= math.exp(-4) for t in trials)


def test_ray_tune_sweep_returns_its_trials(tmp_path, fast_config, monkeypatch):
    """Ray runs each trial in a worker inside its own folder: relative config files must still
    resolve, and the trials must come back to the caller's table."""
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "fixed.yaml", yaml.safe_dump(fast_config))
    write(tmp_path, "s.yaml", "learning_rate: {loguniform: [0.0001, 0.01]}\n")
    trials, report, best_path = run_sweep(
        "Pop",
        "synth",
        "s.yaml",
        max_evals=2,
        config_files=["fixed.yaml"],
        output_file="ray.md",
        tool="ray",
    )
    assert len(trials) == 2 and report.count("**best**") == 1
    assert all(0.0001 <= t["params"]["learning_rate"] <= 0.01 for t in trials)
    assert all(set(t["test"]) >= {"ndcg@10"} for t in trials)
    assert yaml.safe_load(open(best_path))["model"] == "Pop"
    assert (tmp_path / "ray_log").is_dir()
