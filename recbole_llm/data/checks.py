"""Checks of a dataset's atomic files before RecBole (or the semantic step) reads them.

RecBole reads a broken file deep inside pandas and says neither which file nor what to do: a
0-byte ``.inter`` gives ``not enough values to unpack``, a header without rows ``Some feat is
empty``, a missing time column ``[timestamp] is not exist in interaction [...]`` (after the
whole file was loaded), a ``.item`` that is not UTF-8 a ``UnicodeDecodeError`` from the
semantic step's text reader. :func:`check_atomic_files` finds these first, in a moment, and
raises a :class:`~recbole_llm.data.atomic.DatasetError` that names the file and the fix.
"""

import os

from recbole.utils import ModelType

from recbole_llm.data.atomic import DatasetError

_FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_header(path, separator):
    """The ``name:type`` cells of a file's first line, and whether a data row follows."""
    with open(path, "rb") as f:
        first = f.readline()
        has_row = any(line.strip() for line in f)
    return first.decode("utf-8", errors="replace").rstrip("\r\n").split(separator), has_row


def _check_inter(path, config, needs_time):
    if os.path.getsize(path) == 0:
        raise DatasetError(
            f"'{path}' is empty (0 bytes). An .inter file needs a header line of name:type "
            "cells (user_id:token, item_id:token, ...) and one line per interaction; write it "
            "again (python dataset/prepare_<name>.py for a dataset recbole_llm prepares)."
        )
    separator = config["field_separator"] or "\t"
    cells, has_row = _read_header(path, separator)
    malformed = [c for c in cells if c.count(":") != 1 or c.split(":")[1] not in _FIELD_TYPES]
    if malformed:
        raise DatasetError(
            f"'{path}' line 1 must be the header, name:type cells separated by "
            f"{separator!r} (types {', '.join(_FIELD_TYPES)}); cell {malformed[0]!r} is not."
        )
    if not has_row:
        raise DatasetError(f"'{path}' has a header but no interactions; write them into it.")
    time_field = config["TIME_FIELD"]
    if not needs_time:
        return
    fields = [c.split(":")[0] for c in cells]
    why = (
        "which time-ordered splitting (eval_args order: TO) and sequential models need to sort "
        "each user's interactions"
    )
    if not time_field or time_field not in fields:
        raise DatasetError(
            f"'{path}' has no time column '{time_field}' (its columns: {', '.join(fields)}), "
            f"{why}. Add a {time_field or 'timestamp'}:float column, or set TIME_FIELD to the "
            "column that holds the time."
        )
    load_col = config["load_col"].get("inter", []) if config["load_col"] else None
    if load_col not in (None, "*") and time_field not in load_col:
        raise DatasetError(
            f"load_col does not load '{time_field}' from '{path}' (load_col inter: {load_col}), "
            f"{why}. Add it: load_col: {{inter: [{', '.join(list(load_col) + [time_field])}]}}."
        )


def _check_text(path, encoding):
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"'{path}' line {line} is not valid {encoding} text (byte 0x{data[err.start]:02x}). "
            f"Save the file as {encoding}, or set encoding to the file's own encoding "
            "(e.g. encoding: latin-1)."
        ) from None
    except LookupError:
        raise DatasetError(f"encoding '{encoding}' is not a text encoding Python knows.") from None


def _loaded(config, suffix):
    """Whether RecBole loads the ``.suffix`` file (``load_col`` None loads every file)."""
    load_col = config["load_col"]
    return load_col is None or suffix in load_col


def check_atomic_files(config):
    """Fail, naming the file and what to do, if an atomic file the run reads is empty, has a
    malformed header, lacks the time column its split needs, or is not text in ``encoding``.

    Call after the dataset is on disk (``ensure_dataset``) and before it is read.
    """
    folder, name = config["data_path"], config["dataset"]
    benchmark_files = config["benchmark_filename"]
    inter_files = (
        [f"{name}.{part}.inter" for part in benchmark_files]
        if benchmark_files
        else [f"{name}.inter"]
    )
    # benchmark files carry their own split and order; otherwise RecBole sorts by time for a
    # time-ordered split and for the sequential models' data augmentation
    needs_time = not benchmark_files and (
        config["eval_args"]["order"] == "TO" or config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    )
    for file in inter_files:
        path = os.path.join(folder, file)
        if os.path.isfile(path):  # a missing one is ensure_dataset's to report
            _check_inter(path, config, needs_time)
    encoding = config["encoding"] or "utf-8"
    # the semantic step reads item texts and categories from .item whatever load_col says
    reads_item_text = bool(config["text_fields"] or config["category_field"])
    for suffix, read in (
        ("item", _loaded(config, "item") or reads_item_text),
        ("user", _loaded(config, "user")),
    ):
        path = os.path.join(folder, f"{name}.{suffix}")
        if read and os.path.isfile(path):
            _check_text(path, encoding)


def _header_fields(path, separator):
    try:
        cells, _ = _read_header(path, separator)
    except OSError:
        return None
    return [c.split(":")[0] for c in cells]


def columns_to_load(config):
    """``load_col`` for a dataset of the user's own (no YAML of ours, no ``load_col`` set):
    RecBole's default loads only the user and item ids, so a sequential model would lack the
    time field and the semantic step's text fields would be unknown to RecBole. Load the id,
    rating and time fields the ``.inter`` file has, and the item id, ``text_fields`` and
    ``category_field`` from ``.item``. None when the files are not there yet (the caller
    keeps RecBole's default; ``ensure_dataset`` reports the missing files).

    A ``text_fields`` or ``category_field`` column that ``.item`` lacks fails now, in one
    line naming the column and the key to set.
    """
    folder, name = config["data_path"], config["dataset"]
    separator = config["field_separator"] or "\t"
    parts = config["benchmark_filename"]
    inter = os.path.join(folder, f"{name}.{parts[0]}.inter" if parts else f"{name}.inter")
    fields = _header_fields(inter, separator)
    if fields is None:
        return None
    wanted = ("USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD")
    load = {"inter": [config[k] for k in wanted if config[k] and config[k] in fields]}
    text = list(config["text_fields"] or []) + (
        [config["category_field"]] if config["category_field"] else []
    )
    item_path = os.path.join(folder, f"{name}.item")
    item_fields = _header_fields(item_path, separator)
    if item_fields is not None:
        for column in text:
            if column not in item_fields:
                key = "category_field" if column == config["category_field"] else "text_fields"
                raise DatasetError(
                    f"'{item_path}' has no column '{column}' named by {key} (its columns: "
                    f"{', '.join(item_fields)}); set {key} to columns it has."
                )
        item_id = config["ITEM_ID_FIELD"]
        load["item"] = [item_id] + [c for c in dict.fromkeys(text) if c != item_id]
    elif text:
        raise DatasetError(
            f"'{item_path}' does not exist, but text_fields/category_field name item columns "
            f"({', '.join(text)}); write the .item file, or unset text_fields and category_field."
        )
    return load
