"""YAML sweeps: parsing (every type, RecBole's line format, errors), the grid walk, outputs."""

import math

import pytest
import yaml

from recbole_llm import hyper
from recbole_llm.hyper import (
    Param,
    SweepError,
    config_value,
    grid,
    load_params_file,
    main,
    params_dict,
    run_sweep,
)


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


def fake_objective(calls):
    """An objective that records each trial's config_dict; the score is the dropout."""

    def objective(config_dict, config_file_list=None, saved=False):
        calls.append(dict(config_dict))
        score = config_dict["hidden_dropout_prob"]
        return {
            "best_valid_score": score,
            "best_valid_result": {"ndcg@10": score},
            "test_result": {"ndcg@10": score},
            "valid_score_bigger": True,
        }

    return objective


def test_command_line_key_values_are_fixed_for_every_trial_and_in_the_best_config(
    tmp_path, monkeypatch
):
    """run_hyper.py used to drop every --key=value: a sweep trained RecBole's default epochs."""
    import recbole_llm.quick_start

    calls = []
    monkeypatch.setattr(recbole_llm.quick_start, "objective_function", fake_objective(calls))
    sweep = write(tmp_path, "s.yaml", "hidden_dropout_prob: {choice: [0.2, 0.5]}\n")
    output = str(tmp_path / "out.md")
    argv = [
        "--model=Pop",
        "--dataset=synth",
        f"--params_file={sweep}",
        f"--output_file={output}",
        "--epochs=1",
        "--learning_rate=0.01",
        "--weight_decay=1e-4",
        "--show_progress=False",
        "--valid_metric=NDCG@10",
        "--metrics=[Recall, NDCG]",
    ]
    trials = main(argv)
    assert [c["hidden_dropout_prob"] for c in calls] == [0.2, 0.5]
    for config_dict in calls:
        assert config_dict["epochs"] == 1 and type(config_dict["epochs"]) is int
        assert config_dict["learning_rate"] == 0.01 and config_dict["weight_decay"] == 1e-4
        assert config_dict["show_progress"] is False
        assert config_dict["metrics"] == ["Recall", "NDCG"]
        assert config_dict["model"] == "Pop" and config_dict["dataset"] == "synth"
    assert len(trials) == 2
    assert "valid NDCG@10" in open(output).read(), "the table names the command line's metric"
    best = yaml.safe_load(open(tmp_path / "out.best.yaml"))
    assert best["epochs"] == 1 and best["learning_rate"] == 0.01
    assert best["hidden_dropout_prob"] == 0.5 and best["valid_metric"] == "NDCG@10"


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", 1),
        ("-3", -3),
        ("0.01", 0.01),
        ("1e-3", 0.001),
        ("True", True),
        ("false", False),
        ("None", None),
        ("[5,20]", [5, 20]),
        ("{RS: [0.8, 0.1, 0.1]}", {"RS": [0.8, 0.1, 0.1]}),
        ("[normal]", ["normal"]),
        ("NDCG@10", "NDCG@10"),
        ("yes", "yes"),
        ("__import__('os')", "__import__('os')"),
        ("[unclosed", "[unclosed"),
    ],
)
def test_command_line_values_are_typed_without_eval(text, value):
    assert config_value(text) == value and type(config_value(text)) is type(value)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "1"], r"Unexpected argument '--epochs'.*--epochs=VALUE"),
        (["stray"], r"Unexpected argument 'stray'.*--key=value"),
        (["--epochs=1", "--epochs=2"], r"--epochs is given twice"),
    ],
)
def test_extra_arguments_must_be_key_equals_value(tmp_path, extra, message, monkeypatch):
    monkeypatch.setattr(hyper, "run_sweep", lambda *a, **k: pytest.fail("must not run"))
    sweep = write(tmp_path, "s.yaml", "hidden_dropout_prob: {choice: [0.2]}\n")
    with pytest.raises(SweepError, match=message):
        main(["--model=Pop", f"--params_file={sweep}", "--debug", *extra])


def test_a_key_both_swept_and_fixed_is_an_error(tmp_path, monkeypatch):
    import recbole_llm.quick_start

    calls = []
    monkeypatch.setattr(recbole_llm.quick_start, "objective_function", fake_objective(calls))
    sweep = write(tmp_path, "s.yaml", "learning_rate: {choice: [0.001, 0.01]}\n")
    with pytest.raises(SweepError, match=r"learning_rate: swept in '.*s\.yaml' and also fixed"):
        main(["--model=Pop", f"--params_file={sweep}", "--learning_rate=0.01", "--debug"])
    assert calls == []


def test_run_hyper_trains_with_the_command_line_values(tmp_path, fast_config):
    """End to end through RecBole: topk and valid_metric from the command line reach training."""
    settings = {k: v for k, v in fast_config.items() if k != "epochs"}
    fixed = write(tmp_path, "fixed.yaml", yaml.safe_dump(settings))
    sweep = write(tmp_path, "s.yaml", "learning_rate: {choice: [0.01]}\n")
    output = str(tmp_path / "pop.md")
    (trial,) = main(
        [
            "--model=Pop",
            "--dataset=synth",
            f"--params_file={sweep}",
            f"--config_files={fixed}",
            f"--output_file={output}",
            "--epochs=1",
            "--topk=[5]",
            "--valid_metric=NDCG@5",
        ]
    )
    assert set(trial["test"]) == {"recall@5", "mrr@5", "ndcg@5", "hit@5", "precision@5"}
    best = yaml.safe_load(open(tmp_path / "pop.best.yaml"))
    assert best["epochs"] == 1 and best["topk"] == [5] and best["valid_metric"] == "NDCG@5"


def test_run_hyper_help_explains_every_option_and_points_to_the_sweeps():
    from recbole_llm.hyper import build_parser

    parser = build_parser()
    helps = {a.dest: a.help for a in parser._actions}
    for dest in ("model", "dataset", "params_file", "algo", "max_evals", "tool", "output_file"):
        assert helps.get(dest), f"--{dest} has no help"
    assert "sweeps/" in parser.format_help()
