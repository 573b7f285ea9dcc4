"""The package's import directions (docs/architecture.md), read from its import statements.

Every ``import`` and ``from ... import`` of every module under ``recbole_llm/`` is parsed with
``ast``, at the top of the module and inside functions alike, so a door cannot be opened by
hiding an import in a function.
"""

import ast
import os

import pytest
from conftest import REPO

PACKAGE = os.path.join(REPO, "recbole_llm")
MAX_LINES = 400

#: Layers, lowest first: a module imports only from lower layers, or from its own package (a
#: folder: semantics, model, data, bench) in the same layer. In layers 4 and 6 the modules may
#: import each other; there only the absence of cycles orders them.
LAYERS = [
    {"recbole_llm", "errors", "utils", "paths", "fields", "keys", "protocols"},
    {"assets", "compat", "arguments"},
    {"semantics", "model"},
    {"data"},
    {
        "config_data",
        "config_checks",
        "config",
        "training_state",
        "trainer",
        "evaluator",
        "registry",
        "semantic_step",
    },
    {"quick_start"},
    {"hyper", "sweep_params", "bench", "cli"},
]
FREE_WITHIN = {4, 6}

#: The one-way doors between the packages of layers 2 and 3, beyond the layer order: the
#: semantic step never imports the dataset or model layers, the models neither of them, and the
#: dataset layer knows the semantic step only through its files contract.
FORBIDDEN = {
    "semantics": ("recbole_llm.data", "recbole_llm.model"),
    "model": ("recbole_llm.data", "recbole_llm.semantics"),
}
DATA_MAY_IMPORT_FROM_SEMANTICS = {"recbole_llm.semantics.files"}


def _module_name(path):
    parts = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """``[(imported recbole_llm module, line, inside a function)]`` of one module."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # ``from recbole_llm.semantics import files`` imports the module files
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "recbole_llm" or target.startswith("recbole_llm."):
                while target not in MODULES:  # ``import recbole_llm.x.y`` names a module
                    target = target.rpartition(".")[0]
                if target != name:
                    found.append((target, node.lineno, id(node) not in top))
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _component(name):
    """The layer entry a module belongs to: its package folder, or its own name."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(name):
    component = _component(name)
    for index, layer in enumerate(LAYERS):
        if component in layer:
            return index
    raise AssertionError(f"{name} is in no layer of {__name__}.LAYERS; add it there and to docs")


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_imports_run_downwards_only():
    wrong = []
    for name, imports in IMPORTS.items():
        for target, line, _ in imports:
            source_layer, target_layer = _layer(name), _layer(target)
            same_package = _component(name) == _component(target)
            if target_layer < source_layer or (
                target_layer == source_layer and (same_package or source_layer in FREE_WITHIN)
            ):
                continue
            wrong.append(
                f"{name} (layer {source_layer}) line {line} imports {target} "
                f"(layer {target_layer})"
            )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_the_doors_between_semantics_data_and_models_open_one_way():
    wrong = []
    for name, imports in IMPORTS.items():
        component = _component(name)
        for target, line, _ in imports:
            if target.startswith(FORBIDDEN.get(component, ("-",))):
                wrong.append(f"{name} line {line} imports {target}")
            if (
                component == "data"
                and target.startswith("recbole_llm.semantics")
                and target not in DATA_MAY_IMPORT_FROM_SEMANTICS
            ):
                wrong.append(f"{name} line {line} imports {target}, not the files contract")
    assert not wrong, "\n".join(wrong)


def test_no_module_of_ours_is_imported_inside_a_function():
    hidden = [
        f"{name} line {line} imports {target} inside a function"
        for name, imports in IMPORTS.items()
        for target, line, inside in imports
        if inside
    ]
    assert not hidden, "imports hidden in functions hide the directions:\n" + "\n".join(hidden)


def test_there_are_no_import_cycles():
    graph = {name: sorted({t for t, _, _ in imports}) for name, imports in IMPORTS.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_400_lines(name):
    with open(MODULES[name], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines; split it by job"


def test_the_architecture_page_lists_every_module():
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    missing = [
        os.path.relpath(path, PACKAGE)
        for path in MODULES.values()
        if os.path.basename(path) != "__init__.py"
        and os.path.basename(os.path.relpath(path, PACKAGE)) not in text
    ]
    assert not missing, f"docs/architecture.md does not mention: {missing}"
