"""Hyper-parameter sweeps from YAML (or RecBole's line format) over our objective function.

A YAML sweep maps each parameter to one distribution::

    learning_rate: {loguniform: [1.0e-4, 1.0e-1]}   # real bounds
    semantic_weight: {choice: [0.0, 0.1, 0.2]}
    align_temperature: {uniform: [0.05, 0.5]}
    hidden_size: {quniform: [32, 128, 32]}

RecBole's own line format (``name type value``) is read too; there ``loguniform`` takes
*log-space* bounds (``learning_rate loguniform -8,0``), as RecBole and hyperopt define it, while
the YAML form takes the real bounds. Algorithms: ``grid`` (a deterministic walk over every
combination of ``choice`` values, in file order), ``exhaustive``, ``random`` and ``bayes``
(RecBole's HyperTuning on hyperopt), or ray tune with ``--tool=ray``.

On the command line every other ``--key=value`` is a fixed config value of every trial
(``--epochs=1``), typed as RecBole types its command line (:func:`config_value`), and is
written into the best config.
"""

import os
import sys

import yaml

from recbole_llm import quick_start
from recbole_llm.arguments import CommandParser
from recbole_llm.config import Config
from recbole_llm.errors import cli_main
from recbole_llm.sweep_params import (  # noqa: F401 (SweepError, Param: their old import path)
    Param,
    SweepError,
    config_value,
    fixed_values,
    grid,
    load_params_file,
    params_dict,
    ray_space,
)
from recbole_llm.utils import atomic_write

ALGORITHMS = ("grid", "exhaustive", "random", "bayes")


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value


def markdown_report(trials, valid_metric, bigger=True):
    """A table of trials (dicts with ``params``, ``valid``, ``test``), best marked."""
    if not trials:
        return "No trial finished.\n"
    names = list(trials[0]["params"])
    metrics = list(trials[0]["test"])
    scores = [t["valid_score"] for t in trials]
    best = scores.index(max(scores) if bigger else min(scores))
    lines = [
        "| trial | "
        + " | ".join(names)
        + f" | valid {valid_metric} | "
        + " | ".join(f"test {m}" for m in metrics)
        + " |",
        "|---:|" + "---|" * len(names) + "---:|" + "---:|" * len(metrics),
    ]
    for i, trial in enumerate(trials):
        mark = " **best**" if i == best else ""
        values = " | ".join(str(trial["params"][n]) for n in names)
        tests = " | ".join(f"{_plain(trial['test'][m]):.4f}" for m in metrics)
        lines.append(f"| {i + 1}{mark} | {values} | {_plain(trial['valid_score']):.4f} | {tests} |")
    return "\n".join(lines) + "\n"


def write_outputs(trials, output_file, fixed_config, valid_metric, bigger):
    """Write the Markdown table to ``output_file`` and the best config to ``<stem>.best.yaml``."""
    report = markdown_report(trials, valid_metric, bigger)
    atomic_write(output_file, lambda f: f.write(report))
    if not trials:
        return report, None
    scores = [t["valid_score"] for t in trials]
    best = trials[scores.index(max(scores) if bigger else min(scores))]
    best_path = os.path.splitext(output_file)[0] + ".best.yaml"
    best_config = {**fixed_config, **{k: _plain(v) for k, v in best["params"].items()}}
    atomic_write(best_path, lambda f: yaml.safe_dump(best_config, f, sort_keys=True))
    return report, best_path


def run_sweep(
    model,
    dataset,
    params_file,
    algo="grid",
    max_evals=10,
    config_files=None,
    output_file="hyper.md",
    tool="hyperopt",
    objective=None,
    config_dict=None,
):
    """Run a sweep; returns the trials (params, valid score, valid and test results), the
    Markdown report and the path of the best config.

    ``config_dict`` holds fixed config values of every trial (they go to each trial's
    ``config_dict``, so ray's workers get them too, and into the best config); a key may not be
    both fixed there and swept in ``params_file``.
    """
    if algo not in ALGORITHMS:
        raise SweepError(f"--algo must be one of {', '.join(ALGORITHMS)}, got '{algo}'")
    params = load_params_file(params_file)
    config_dict = dict(config_dict or {})
    both = [p.name for p in params if p.name in config_dict]
    if both:
        fixed_to = ", ".join(f"{name}={config_dict[name]!r}" for name in both)
        raise SweepError(
            f"{', '.join(both)}: swept in '{params_file}' and also fixed ({fixed_to}, e.g. "
            "by --key=value); drop it from the sweep file or from the fixed values."
        )
    objective = objective or quick_start.objective_function  # looked up now: tests replace it
    fixed = {**config_dict, "model": model, "dataset": dataset}
    trials = []

    def run_trial(values):
        result = objective(
            config_dict={**fixed, **values}, config_file_list=config_files, saved=False
        )
        trials.append(
            {
                "params": dict(values),
                "valid_score": result["best_valid_score"],
                "valid": dict(result["best_valid_result"] or {}),
                "test": dict(result["test_result"]),
                "bigger": result["valid_score_bigger"],
            }
        )
        return result

    if tool == "ray":

        def record_trial(values):
            run_trial(values)
            return trials[-1]

        trials.extend(_run_ray(params, max_evals, record_trial))
    elif algo == "grid":
        for values in grid(params):
            run_trial(values)
    else:
        from recbole.trainer import HyperTuning

        def recbole_objective(config_dict, config_file_list=None, saved=False):
            values = {p.name: config_dict[p.name] for p in params}
            return {"model": model, **run_trial(values)}

        tuner = HyperTuning(
            recbole_objective,
            params_dict=params_dict(params),
            fixed_config_file_list=config_files,
            algo=algo,
            max_evals=max_evals,
        )
        tuner.run()
    bigger = trials[0]["bigger"] if trials else True
    valid_metric = _valid_metric(model, dataset, config_files, config_dict)
    report, best_path = write_outputs(trials, output_file, fixed, valid_metric, bigger)
    return trials, report, best_path


def _valid_metric(model, dataset, config_files, config_dict):
    config = Config(
        model=model, dataset=dataset, config_file_list=config_files, config_dict=config_dict
    )
    return config["valid_metric"]


def _run_ray(params, max_evals, record_trial):
    """Run the trials as ray tune trials; returns their records (``record_trial``'s).

    Ray runs each trial in a worker process whose working directory is the trial's own folder,
    so the trial first moves to the directory the sweep started in: relative config files, the
    data root and the output folders then mean what they mean for the other algorithms. A
    worker's record stays in the worker, so each trial reports it to ray as flat numbers and the
    records are rebuilt here from ray's results.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise SweepError(
            "--tool=ray needs pyarrow (ray 2.6.3's tune reads its trial results with it): "
            "pip install 'recbole-llm[ray]'"
        ) from None
    import ray
    import torch
    from ray import tune

    start_dir = os.getcwd()
    parts = ("valid", "test")

    def trainable(values):
        os.chdir(start_dir)
        # a worker's command line holds ray's own flags (--node-ip-address=...), which
        # RecBole's Config would read as (unknown) config keys
        sys.argv = sys.argv[:1]
        record = record_trial(values)
        report = {"valid_score": float(record["valid_score"]), "bigger": bool(record["bigger"])}
        for part in parts:
            report.update({f"{part}:{k}": float(v) for k, v in record[part].items()})
        tune.report(**report)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True)
    try:
        analysis = tune.run(
            trainable,
            config=ray_space(params),
            num_samples=max_evals,
            storage_path=os.path.join(start_dir, "ray_log"),
            resources_per_trial={"gpu": 1} if torch.cuda.is_available() else None,
            verbose=0,
        )
    finally:
        ray.shutdown()
    trials = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        if "valid_score" not in last:
            continue
        record = {"params": {p.name: trial.config[p.name] for p in params}}
        record.update(valid_score=last["valid_score"], bigger=last["bigger"])
        for part in parts:
            prefix = f"{part}:"
            record[part] = {k[len(prefix) :]: v for k, v in last.items() if k.startswith(prefix)}
        trials.append(record)
    return trials


DESCRIPTION = "Sweep hyper-parameters of a recbole_llm or RecBole model."
EPILOG = (
    "Example sweeps: sweeps/*.yaml and sweeps/sasrec.hyper (RecBole's line format). Any other "
    "--key=value sets that config key for every trial (e.g. --epochs=1) and is written into the "
    "best config."
)


def add_arguments(parser):
    """The sweep's options (``run_hyper.py``, ``recbole-llm sweep``); other ``--key=value``
    arguments are config keys of every trial."""
    parser.epilog = EPILOG
    parser.add_argument("--model", "-m", default="EIMF", help="model class name (default: EIMF)")
    parser.add_argument(
        "--dataset", "-d", default=None, help="dataset (default: the model's, or ml-100k)"
    )
    parser.add_argument(
        "--params_file", required=True, help="YAML sweep or RecBole line-format file"
    )
    parser.add_argument(
        "--algo",
        default="grid",
        choices=ALGORITHMS,
        help="grid: every combination of choice values; exhaustive, random, bayes: RecBole's "
        "HyperTuning (default: grid)",
    )
    parser.add_argument(
        "--max_evals", type=int, default=10, help="trials for random/bayes/ray (default: 10)"
    )
    parser.add_argument("--config_files", default=None, help="space-separated fixed config files")
    parser.add_argument(
        "--output_file",
        default="hyper.md",
        help="Markdown table of the trials; the best config goes to <stem>.best.yaml "
        "(default: hyper.md)",
    )
    parser.add_argument(
        "--tool",
        default="hyperopt",
        choices=["hyperopt", "ray"],
        help="ray: run the trials as ray tune trials (default: hyperopt)",
    )


def build_parser():
    """run_hyper.py's parser (:func:`add_arguments`)."""
    parser = CommandParser(description=DESCRIPTION)
    add_arguments(parser)
    return parser


def main(argv=None):
    """``python run_hyper.py --model=EIMF --params_file=sweeps/eimf.yaml --algo=grid
    --epochs=20``: every ``--key=value`` that is not one of our flags is fixed for every trial.
    A user error ends it with one line ``error: ...`` and status 2 (``--debug``: the traceback).
    """
    return cli_main(_main, argv)


def _main(argv):
    return run_command(*build_parser().parse_known_args(argv))


def run_command(args, extra):
    """Run the sweep the parsed options ``args`` ask for, with the ``extra`` ``--key=value``
    arguments fixed for every trial; prints the table and returns the trials."""
    config_dict = fixed_values(extra)
    sys.argv = sys.argv[:1]  # RecBole's Config must not read our flags; the rest is config_dict
    config_files = args.config_files.split() if args.config_files else None
    trials, report, best_path = run_sweep(
        args.model,
        args.dataset,
        args.params_file,
        algo=args.algo,
        max_evals=args.max_evals,
        config_files=config_files,
        output_file=args.output_file,
        tool=args.tool,
        config_dict=config_dict,
    )
    print(report)
    print(f"trials: {args.output_file}; best config: {best_path}")
    return trials
