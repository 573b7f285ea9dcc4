"""Every config key of ours is declared once, in recbole_llm/keys.py: overall.yaml, our model
YAMLs, docs/usage.md's key reference and every list that classifies keys agree with it."""

import glob
import os
import re

import pytest
import yaml
from conftest import REPO

from recbole_llm import config, config_checks, keys, training_state
from recbole_llm.bench import suite
from recbole_llm.data import utils as data_utils
from recbole_llm.registry import get_model
from recbole_llm.semantics import encoder, generator, models, settings

PROPERTIES = os.path.join(REPO, "properties")
OVERALL = os.path.join(PROPERTIES, "overall.yaml")
MODEL_YAMLS = sorted(glob.glob(os.path.join(PROPERTIES, "model", "*.yaml")))
_COMMENTED = re.compile(r"^([A-Za-z_]\w*):.*?#\s*\((\w+)\)\s*(.*)$")

#: What each semantic pipeline's files depend on (besides llm_identity, prompt_template and
#: parser). Pinned: a key added or dropped here makes every manifest stale, so every dataset's
#: semantic files would be made again; change it only on purpose.
EIMF_SETTINGS = {
    "text_fields",
    "llm_model",
    "llm_max_new_tokens",
    "llm_repetition_penalty",
    "encoder_model",
    "prompt_max_items",
    "item_noun",
    "item_verb",
    "category_field",
    "typical_selection",
    "typical_ratio",
    "ap_max_users",
    "max_interests",
    "interest_source",
    "interest_fallback",
    "typical_assignment",
    "semantics_seed",
    "eval_args",
    "eval_protocol",  # left out of settings() at its default: files made before stay current
    "user_inter_num_interval",
    "item_inter_num_interval",
    "rm_dup_inter",
    "val_interval",
}
LLM4SBR_SETTINGS = {
    "text_fields",
    "llm_model",
    "llm_max_new_tokens",
    "llm_repetition_penalty",
    "encoder_model",
    "prompt_max_items",
    "intent_views",
    "intent_source",
    "intent_topr",
    "intent_aggregation",
    "intent_form",
    "benchmark_filename",
}


def _yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _comments(path):
    """``{key: (type tag, comment text)}`` of one of our YAMLs."""
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = _COMMENTED.match(line)
            if match:
                found[match.group(1)] = (match.group(2), match.group(3))
    return found


def _same(value, default):
    """Equal, and of the same kind (True is not 1; 60 and 60.0 are the same number)."""
    numbers = (int, float)
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    if isinstance(value, numbers) and isinstance(default, numbers):
        return value == default
    return type(value) is type(default) and value == default


def _names(text, value):
    """Whether ``value`` is named in ``text`` as a word (``ap`` is not in ``map``)."""
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text) is not None


def test_every_key_of_overall_yaml_is_declared_with_its_default_and_type():
    defaults, comments = _yaml(OVERALL), _comments(OVERALL)
    declared = {name for name, key in keys.KEYS.items() if key.source == keys.OVERALL}
    assert set(defaults) - declared == set(), "keys of overall.yaml missing from keys.KEYS"
    assert declared - set(defaults) == set(), "keys.KEYS declares overall keys the YAML lacks"
    assert list(defaults) == [k for k in keys.KEYS if k in declared], "keep overall.yaml's order"
    for name, value in defaults.items():
        key = keys.KEYS[name]
        assert _same(value, key.default), f"{name}: overall.yaml {value!r}, keys {key.default!r}"
        assert comments[name][0] == key.type, f"{name}: tag ({comments[name][0]}), keys {key.type}"


def test_every_key_of_our_model_yamls_is_declared_with_its_type():
    seen = set()
    for path in MODEL_YAMLS:
        comments = _comments(path)
        for name in _yaml(path):
            where = os.path.relpath(path, REPO)
            assert name in keys.KEYS, f"{where}: '{name}' is not declared in recbole_llm.keys.KEYS"
            assert comments[name][0] == keys.KEYS[name].type, f"{where}: {name}'s (type) tag"
            seen.add(name)
    only_models = {name for name, key in keys.KEYS.items() if key.source == keys.MODEL}
    assert only_models - seen == set(), "declared model keys that no model YAML sets"


def test_keys_are_recboles_exactly_when_declared_so():
    for name, key in keys.KEYS.items():
        assert (key.source == keys.RECBOLE) == (name in keys.recbole_keys()), name
        assert (key.default is keys.ELSEWHERE) == (key.source != keys.OVERALL), name
        assert key.type is None or key.type in keys.TYPE_TAGS, name
        assert set(key.roles) <= set(keys.ROLES), name
    assert keys.default("intent_form") == "compact"
    with pytest.raises(KeyError, match="per model"):
        keys.default("fusion")


def test_allowed_values_are_declared_and_named_where_users_read_them():
    comments = _comments(OVERALL)
    for name, choices in keys.CHOICES.items():
        assert keys.default(name) in choices, name
        for value in choices:
            assert _names(comments[name][1], value), f"overall.yaml's {name} omits {value}"
    # a model's allowed values live in its class, next to the code that reads them
    for path in MODEL_YAMLS:
        model_class = get_model(os.path.basename(path)[: -len(".yaml")])
        defaults, comments = _yaml(path), _comments(path)
        for name, choices in (getattr(model_class, "config_choices", None) or {}).items():
            assert keys.KEYS[name].type == "str", name
            if name in defaults:
                assert defaults[name] in choices, (path, name)
                for value in choices:
                    assert _names(comments[name][1], value), f"{path}: {name} omits {value}"


def test_roles_agree_with_each_other():
    datasets, volatile = set(keys.DATASET_ARGUMENTS), keys.VOLATILE_KEYS
    for name, key in keys.KEYS.items():
        pipelines = {keys.EIMF, keys.LLM4SBR} & key.roles
        if pipelines and key.source != keys.RECBOLE:
            assert name in datasets, f"{name}: a dataset holds its semantics, so it is identity"
        if name in volatile:
            assert not pipelines and name not in datasets, f"{name}: volatile yet identity"
            assert key.neutral is keys.NO_VALUE, name
        if keys.SELECTING in key.roles:
            assert pipelines or keys.STEP in key.roles, name
        if key.only_for:
            assert key.neutral is not keys.NO_VALUE, f"{name}: only_for needs the old value"
        if keys.NUMBER in key.roles:
            assert key.type in ("int", "float"), name
        if keys.NAMES in key.roles:
            assert key.type == "list", name


def test_the_settings_key_sets_are_pinned():
    """The semantic settings hashes stay those of the files made so far."""
    assert set(settings.SETTING_KEYS["eimf"]) == EIMF_SETTINGS
    assert set(settings.SETTING_KEYS["llm4sbr"]) == LLM4SBR_SETTINGS
    # settings() reads exactly these, plus the LLM's identity, the template and the parser
    for kind, pinned, control in [
        ("eimf", EIMF_SETTINGS, {"interest_source": "categories"}),
        ("llm4sbr", LLM4SBR_SETTINGS, {"intent_source": "last_item"}),
    ]:
        plain = {**dict.fromkeys(pinned, 1), "item_noun": "movie", **control}
        values = settings.settings(plain, kind)
        assert set(values) == pinned | {"llm_identity", "prompt_template", "parser"}
        assert values["llm_identity"] is None


def test_every_list_that_classifies_keys_is_derived_from_the_table():
    assert settings.SETTING_KEYS == {kind: keys.with_role(kind) for kind in settings.KINDS}
    assert settings.SELECTING_KEYS == {
        "semantics_dir": None,
        "llm_model": "SmolLM2-135M-Instruct",
        "interest_source": "llm",
        "typical_assignment": "cluster",
        "intent_source": "llm",
    }
    assert settings.STEP_KEYS == keys.with_role(keys.STEP)
    assert suite.NEUTRAL_VALUES is keys.NEUTRAL_VALUES and suite.ONLY_FOR is keys.ONLY_FOR
    assert data_utils.DATASET_ARGUMENTS is keys.DATASET_ARGUMENTS
    assert training_state.VOLATILE_KEYS is keys.VOLATILE_KEYS
    assert config.NAME_LIST_KEYS is keys.NAME_LIST_KEYS
    assert config_checks.NUMBER_KEYS == {
        name: int if keys.KEYS[name].type == "int" else float
        for name in keys.with_role(keys.NUMBER)
    }
    assert generator.BACKENDS is keys.CHOICES["llm_backend"]
    # the embedded LLM and encoder are what the defaults name
    assert models.DEFAULT_LLM == keys.default("llm_model")
    assert encoder.DEFAULT_ENCODER == keys.default("encoder_model")


# ---------------------------------------------------------------- docs/usage.md's key tables

_PARENTHESES = re.compile(r"\([^()]*\)")
_VALUE = re.compile(r"`[^`]*`|[^,]+")  # a value in backticks may hold commas: `[long, short]`


def _reference_rows():
    """``[(names, default cell, whole row)]`` of the tables in docs/usage.md's Configuration."""
    with open(os.path.join(REPO, "docs", "usage.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1], line))
    return rows


def _documented_defaults(cell, count):
    """The literal defaults of a default cell: one per key, or one for all; text in
    parentheses explains and is left out (``~`` (the dataset folder))."""
    literal = _PARENTHESES.sub("", cell).strip()
    if not literal:
        return None
    parts = [part.strip() for part in _VALUE.findall(literal) if part.strip()]
    values = [yaml.safe_load(part.strip("`")) for part in parts]
    return values * count if len(values) == 1 else values


def test_the_key_reference_in_usage_md_agrees_with_the_declarations():
    rows = _reference_rows()
    documented = [name for names, _, _ in rows for name in names]
    assert len(documented) == len(set(documented)), "a key documented twice"
    overall = [name for name, key in keys.KEYS.items() if key.source == keys.OVERALL]
    assert set(overall) - set(documented) == set(), "overall.yaml keys missing in usage.md"
    for names, cell, row in rows:
        for name in names:
            assert name in keys.KEYS, f"usage.md documents an undeclared key: {name}"
        values = _documented_defaults(cell, len(names))
        if values is None:  # "(model YAML)": a default each model sets
            assert all(keys.KEYS[n].source == keys.MODEL for n in names), row
            continue
        assert len(values) == len(names), f"one default per key: {row}"
        for name, value in zip(names, values):
            assert _same(value, keys.default(name)), f"usage.md: {name} = {value!r}"
            for choice in keys.KEYS[name].choices or ():
                assert f"`{choice}`" in row, f"usage.md: {name}'s row omits `{choice}`"


def test_the_documented_defaults_are_read_as_written():
    assert _documented_defaults("`~` (the dataset folder, or $X, y)", 2) == [None, None]
    assert _documented_defaults("`transformers`, `Smol`", 2) == ["transformers", "Smol"]
    assert _documented_defaults("4, 60, 3", 3) == [4, 60, 3]
    assert _documented_defaults("`[long, short]`", 1) == [["long", "short"]]
    assert _documented_defaults("(model YAML)", 1) is None
    assert not _same(1, True) and _same(60, 60.0) and not _same("1", 1)
