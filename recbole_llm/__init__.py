"""recbole-llm: LLM-enhanced sequential and session recommenders as RecBole models.

Importing this package is cheap: it imports neither RecBole nor torch, ray, transformers or
sentence-transformers. The public entry points are resolved on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "run": "recbole_llm.quick_start",
    "run_recbole_llm": "recbole_llm.quick_start",
    "objective_function": "recbole_llm.quick_start",
    "load_data_and_model": "recbole_llm.quick_start",
    "Config": "recbole_llm.config",
    "get_model": "recbole_llm.registry",
    "get_trainer": "recbole_llm.registry",
    "create_dataset": "recbole_llm.quick_start",
    "data_preparation": "recbole_llm.data.utils",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recbole_llm' has no attribute {name!r}")
