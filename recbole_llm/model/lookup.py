"""Model lookup: recbole_llm's models first, then RecBole's (RecBole-GNN's ``get_model``).

A model named ``X`` lives in ``recbole_llm/model/x.py`` (RecBole's convention: file name is the
class name in lower case). Every RecBole model resolves through the same function, so any
baseline runs through our entry points, and a wrapper model (EIMF, LLM4SBR) finds its backbone
here without importing anything above the model layer. Unknown names fail with the closest
known names.
"""

import ast
import difflib
import importlib
import importlib.util
import os
import re

from recbole_llm import compat
from recbole_llm.errors import UserError

_MODEL_PACKAGE = "recbole_llm.model"
_RECBOLE_MODEL_SUBPACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
_CLASS_RE = re.compile(r"^class\s+(\w+)\s*[(:]", re.MULTILINE)


#: RecBole's models that need a package recbole_llm does not install, and why (an extra when
#: one installs it): ``get_model`` says so in one line instead of a traceback deep in training.
OPTIONAL_PACKAGES = {
    "LightGBM": ("lightgbm", "its trainer is LightGBM", "pip install 'recbole-llm[context]'"),
    "XGBoost": ("xgboost", "its trainer is XGBoost", "pip install 'recbole-llm[context]'"),
    "NCL": ("faiss", "it clusters users and items with faiss", "pip install 'recbole-llm[graph]'"),
    "KGAT": (
        "dgl",
        "it builds its knowledge graph with dgl",
        "no dgl on PyPI supports torch > 2.2.1 (dgl 2.1.0, the newest wheel, ships its "
        "libraries for torch 2.0.0 to 2.2.1), so KGAT runs only with such a torch and dgl",
    ),
}
for _name in ("KGIN", "MCCLK"):
    OPTIONAL_PACKAGES[_name] = (
        "torch_scatter",
        "it aggregates the knowledge graph with torch_scatter",
        "PyPI has no torch-scatter wheel, only its source, to be compiled against your torch "
        "(pip install --no-build-isolation torch-scatter)",
    )


class MissingPackageError(UserError):
    """A RecBole model whose optional package is missing or cannot be imported here."""


def check_optional_package(model_name):
    """Raise :class:`MissingPackageError` if RecBole's ``model_name`` needs a package
    (:data:`OPTIONAL_PACKAGES`) that does not import here; the message names the model, the
    package, why the model needs it and what to do."""
    if model_name not in OPTIONAL_PACKAGES:
        return
    package, why, remedy = OPTIONAL_PACKAGES[model_name]
    try:
        importlib.import_module(package)  # a heavy optional library, only for this model
    except ModuleNotFoundError:
        problem = "which is not installed"
    except Exception as err:  # an installed build that does not load (dgl without its torch)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        problem = f"which does not import here ({type(err).__name__}: {first})"
    else:
        return
    raise MissingPackageError(f"Model {model_name} needs {package} ({why}), {problem}; {remedy}.")


class UnknownNameError(UserError):
    """A model, trainer or dataset class name that resolves to nothing; the message lists the
    closest known names."""


def closest_names(name, candidates, n=5):
    """The candidates closest to ``name`` (case-insensitive), best first."""
    by_lower = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[m] for m in matches]


def unknown_name(kind, name, candidates):
    """The :class:`UnknownNameError` for ``name``, naming the closest of ``candidates``."""
    suggestions = closest_names(name, candidates)
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    return UnknownNameError(
        f"Unknown {kind} '{name}'.{hint} Names are case-sensitive class names "
        f"({len(set(candidates))} known)."
    )


def _classes_in_files(folder):
    """Class names defined in ``folder/*.py`` whose lower-case name is the file name."""
    names = []
    if not os.path.isdir(folder):
        return names
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py") or file.startswith("_"):
            continue
        with open(os.path.join(folder, file), encoding="utf-8") as f:
            for cls in _CLASS_RE.findall(f.read()):
                if cls.lower() == file[:-3]:
                    names.append(cls)
    return names


def known_models():
    """Names of every model that :func:`get_model` resolves: ours, then RecBole's."""
    import recbole.model

    ours = _classes_in_files(os.path.dirname(os.path.abspath(__file__)))
    base = os.path.dirname(recbole.model.__file__)
    theirs = [
        name
        for sub in _RECBOLE_MODEL_SUBPACKAGES
        for name in _classes_in_files(os.path.join(base, sub))
    ]
    return ours + [name for name in theirs if name not in ours]


def recbole_models():
    """Every model RecBole ships, as ``{class name: sub-package}`` in the order of RecBole's
    sub-packages: the names each ``recbole/model/<sub-package>/__init__.py`` imports (read, not
    imported: exlib_recommender would import lightgbm and xgboost)."""
    import recbole.model

    base = os.path.dirname(recbole.model.__file__)
    models = {}
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        with open(os.path.join(base, sub, "__init__.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                models.update((alias.asname or alias.name, sub) for alias in node.names)
    return models


def _recbole_model_module(model_name):
    """Import path of RecBole's module for ``model_name``, found on disk without importing the
    other sub-packages (RecBole's own lookup imports exlib_recommender, which needs lightgbm
    and xgboost, before it can say a name is unknown)."""
    import recbole.model

    base = os.path.dirname(recbole.model.__file__)
    for sub in _RECBOLE_MODEL_SUBPACKAGES:
        if os.path.isfile(os.path.join(base, sub, f"{model_name.lower()}.py")):
            return f"recbole.model.{sub}.{model_name.lower()}"
    return None


def get_model(model_name):
    """Return the model class called ``model_name``, looking in recbole_llm before RecBole."""
    if not isinstance(model_name, str):
        raise TypeError(f"model name must be a str, got {type(model_name).__name__}")
    compat.apply()
    module_path = f"{_MODEL_PACKAGE}.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is None:
        module_path = _recbole_model_module(model_name)
        if module_path is not None:
            check_optional_package(model_name)
    if module_path is not None:
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            raise ImportError(
                f"Model '{model_name}' needs the package '{err.name}', which is not installed."
            ) from err
        if hasattr(module, model_name):
            return getattr(module, model_name)
    raise unknown_name("model", model_name, known_models())
