"""The parameter space of a sweep: read from YAML or RecBole's line format, walked as a grid,
or given to hyperopt or ray tune; and fixed ``--key=value`` values typed as RecBole types its
command line. See :mod:`recbole_llm.hyper` for the file formats.
"""

import itertools
import math
import os
import re
from dataclasses import dataclass

import yaml

from recbole_llm.errors import UserError

KINDS = ("choice", "uniform", "quniform", "loguniform")


class SweepError(UserError):
    """A sweep file that cannot be used; the message names the file, line or key."""


@dataclass
class Param:
    """One swept parameter; ``loguniform`` bounds are kept in log space, as hyperopt wants."""

    name: str
    kind: str
    args: list


def _number_list(where, value, length):
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise SweepError(f"{where}: needs a list of {length} numbers, got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise SweepError(f"{where}: needs numbers, got {value!r}")
    return [float(v) for v in value]


def _check_bounds(where, low, high):
    if not low < high:
        raise SweepError(f"{where}: the lower bound {low} must be below the upper bound {high}")


def _from_yaml(path, content):
    params = []
    for name, spec in content.items():
        where = f"{path}: '{name}'"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise SweepError(
                f"{where} must map to one of {{{', '.join(KINDS)}: ...}}, got {spec!r}"
            )
        ((kind, value),) = spec.items()
        if kind not in KINDS:
            raise SweepError(
                f"{where}: unknown distribution '{kind}'; use one of {', '.join(KINDS)}"
            )
        if kind == "choice":
            if not isinstance(value, list) or not value:
                raise SweepError(f"{where}: choice needs a non-empty list, got {value!r}")
            params.append(Param(name, kind, list(value)))
        elif kind == "uniform":
            low, high = _number_list(where, value, 2)
            _check_bounds(where, low, high)
            params.append(Param(name, kind, [low, high]))
        elif kind == "quniform":
            low, high, q = _number_list(where, value, 3)
            _check_bounds(where, low, high)
            if q <= 0:
                raise SweepError(f"{where}: the step q must be positive, got {q}")
            params.append(Param(name, kind, [low, high, q]))
        else:
            low, high = _number_list(where, value, 2)
            _check_bounds(where, low, high)
            if low <= 0:
                raise SweepError(
                    f"{where}: loguniform takes real, positive bounds in YAML (e.g. [1e-4, 1e-1]); "
                    "RecBole's line format takes log-space bounds instead"
                )
            params.append(Param(name, kind, [math.log(low), math.log(high)]))
    return params


_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+(.+?)\s*$")


def _from_lines(path, text):
    params = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        match = _LINE.match(line)
        if not match:
            raise SweepError(f"{where}: expected 'name type value', got {line.strip()!r}")
        name, kind, value = match.groups()
        if kind not in KINDS:
            raise SweepError(
                f"{where}: unknown distribution '{kind}'; use one of {', '.join(KINDS)}"
            )
        if kind == "choice":
            try:
                choices = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise SweepError(f"{where}: cannot read the choices {value!r}: {err}") from err
            if not isinstance(choices, list) or not choices:
                raise SweepError(
                    f"{where}: choice needs a non-empty list like [1, 2], got {value!r}"
                )
            params.append(Param(name, kind, choices))
            continue
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError as err:
            raise SweepError(
                f"{where}: bounds must be numbers separated by commas, got {value!r}"
            ) from err
        expected = 3 if kind == "quniform" else 2
        if len(numbers) != expected:
            raise SweepError(f"{where}: {kind} needs {expected} numbers, got {value!r}")
        _check_bounds(where, numbers[0], numbers[1])
        params.append(Param(name, kind, numbers))  # loguniform: already log-space bounds
    return params


def load_params_file(path):
    """Parse a sweep file (YAML mapping or RecBole's line format) into :class:`Param` s."""
    if not os.path.isfile(path):
        raise SweepError(f"Sweep file '{path}' does not exist.")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError:
        content = None
    params = _from_yaml(path, content) if isinstance(content, dict) else _from_lines(path, text)
    if not params:
        raise SweepError(f"Sweep file '{path}' defines no parameters.")
    names = [p.name for p in params]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"Sweep file '{path}' repeats {repeated}.")
    return params


def grid(params):
    """Every combination of the ``choice`` values, in file order (first parameter slowest)."""
    others = [p.name for p in params if p.kind != "choice"]
    if others:
        raise SweepError(f"--algo=grid walks choice values only; {others} are not choices")
    names = [p.name for p in params]
    return [dict(zip(names, values)) for values in itertools.product(*(p.args for p in params))]


def params_dict(params):
    """RecBole HyperTuning's ``params_dict`` (``{kind: {name: args}}``, log-space loguniform)."""
    result = {}
    for param in params:
        args = param.args if param.kind == "choice" else list(param.args)
        result.setdefault(param.kind, {})[param.name] = args
    return result


def ray_space(params):
    """The same space for ray tune (which takes real loguniform bounds)."""
    from ray import tune

    space = {}
    for p in params:
        if p.kind == "choice":
            space[p.name] = tune.choice(p.args)
        elif p.kind == "uniform":
            space[p.name] = tune.uniform(*p.args)
        elif p.kind == "quniform":
            space[p.name] = tune.quniform(*p.args)
        else:
            space[p.name] = tune.loguniform(math.exp(p.args[0]), math.exp(p.args[1]))
    return space


_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def config_value(text):
    """A command-line value typed as RecBole types its command line, without ``eval``.

    ``1`` -> 1, ``1e-3`` -> 0.001, ``True``/``false`` -> bools, ``None`` -> None, ``[5,20]`` or
    ``{a: 1}`` -> what YAML reads (the string itself if YAML cannot read it); anything else
    stays a string (``--intent_views=[normal]`` becomes a list either way).
    """
    if text == "None":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def fixed_values(extra_args, source="the command line"):
    """``--key=value`` arguments -> ``{key: typed value}`` (:func:`config_value`)."""
    values = {}
    for arg in extra_args:
        key, equals, text = arg[2:].partition("=")
        if not arg.startswith("--") or not equals or not key:
            hint = f"--{arg.lstrip('-')}=VALUE" if arg.startswith("-") else "--key=value"
            raise SweepError(
                f"Unexpected argument {arg!r} on {source}: a config value for every trial is "
                f"written as one argument {hint} (e.g. --epochs=1, not --epochs 1)."
            )
        value = config_value(text)
        if key in values and values[key] != value:
            raise SweepError(f"--{key} is given twice on {source}, with different values.")
        values[key] = value
    return values
