"""Every on-disk location of the package: installed packages, our YAML defaults, shipped reply
files, and the cache root with the folders under it.

This module imports nothing from the package, so that every layer finds files the same way.
"""

import importlib.util
import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def package_dir(package):
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def properties_dir():
    """Folder holding our YAML defaults: package data when installed, else the checkout's."""
    installed = os.path.join(PACKAGE_DIR, "properties")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(PACKAGE_DIR), "properties")


def shipped_path(name):
    """A reply file shipped inside the package (``recbole_llm/shipped/<name>``)."""
    return os.path.join(PACKAGE_DIR, "shipped", name)


#: How ``llm_reply_files`` names a file shipped with the package: ``shipped:<name>``.
SHIPPED_PREFIX = "shipped:"


def reply_file(name):
    """The path an ``llm_reply_files`` entry names (``shipped:<name>``, else a path)."""
    if name.startswith(SHIPPED_PREFIX):
        return shipped_path(name[len(SHIPPED_PREFIX) :])
    return name


def cache_root(config_value=None):
    """Root folder of our caches: ``semantics_cache_dir``, else $RECBOLE_LLM_CACHE, else
    ``~/.cache/recbole_llm``."""
    root = config_value or os.environ.get("RECBOLE_LLM_CACHE") or "~/.cache/recbole_llm"
    return os.path.abspath(os.path.expanduser(root))


def models_dir(config_value=None):
    """Where local models are converted or assembled: ``<cache root>/models``."""
    return os.path.join(cache_root(config_value), "models")


def runs_dir():
    """Where benchmark runs keep their training states and worker logs: ``<cache root>/runs``,
    outside the repository."""
    return os.path.join(cache_root(), "runs")
