"""Semantic atomic files and their manifest: writing (atomically), reading and validating.

Files, in ``semantics_dir`` (default: the dataset's folder), tab-separated with RecBole headers:

=====================  ==========================================================  ==========
file                   columns                                                     written by
=====================  ==========================================================  ==========
``<ds>.itemtext``      ``iid:token  item_text:float_seq``                          both steps
``<ds>.interest``      ``tuid:token  interest_num:float  interest_emb:float_seq``   EIMF
``<ds>.usertypical``   ``uid:token  tuid:token``                                   EIMF
``<ds>.intent``        ``sid:token`` and per view ``long_intent_items:token_seq``     LLM4SBR
                       ``long_intent_weights:float_seq`` (compact, the default), or
                       ``long_intent:float_seq`` (dense); ``short_``, or ``normal_``
                       for the single-view ablation
``<ds>.eimf.json`` /   manifest: inputs and their hashes, settings, LLM, encoder,
``<ds>.llm4sbr.json``  prompt template, dimensions, row counts, calls, tokens, time
=====================  ==========================================================  ==========

A compact intent is the weighted sum of its items' ``item_text`` vectors (``intent_topr``
ids and weights instead of the encoder's dimension, about 40x smaller); the dense form holds
the vector itself and is written when it cannot be compact (``intent_topr: 0`` keeps the raw
answer; item ids with spaces). The manifest names the form (``files.<ds>.intent.form``); a file
made before the compact form existed names none and is dense.

``interest_emb`` is the typical user's interests, ``max_interests`` vectors of the encoder's
dimension one after the other (zero rows past ``interest_num``). Plain RecBole can load every
file with ``additional_feat_suffix`` plus ``alias_of_item_id: [iid]`` or
``alias_of_user_id: [uid, tuid]`` / ``[sid]`` and ``preload_weight`` (see README).
"""

import hashlib
import itertools
import json
import os
import warnings

import numpy as np

from recbole_llm.assets import file_sha256
from recbole_llm.errors import UserError
from recbole_llm.utils import atomic_write

MANIFEST_FORMAT = 1

HEADERS = {
    "itemtext": ["iid:token", "item_text:float_seq"],
    "interest": ["tuid:token", "interest_num:float", "interest_emb:float_seq"],
    "usertypical": ["uid:token", "tuid:token"],
}


INTENT_FORMS = ("compact", "dense")


def intent_header(views, form="dense"):
    """Header of ``<ds>.intent``: the sample key, then per view one vector column (dense) or
    the localised items' ids and weights (compact)."""
    if form not in INTENT_FORMS:
        raise SemanticsError(f"Unknown intent file form '{form}' (known: {list(INTENT_FORMS)}).")
    if form == "dense":
        return ["sid:token"] + [f"{view}_intent:float_seq" for view in views]
    return ["sid:token"] + [
        cell
        for view in views
        for cell in (f"{view}_intent_items:token_seq", f"{view}_intent_weights:float_seq")
    ]


def intent_form(config, manifest):
    """The form of the ``.intent`` file a manifest describes; files made before the compact
    form existed name none and are dense."""
    entry = manifest["files"].get(f"{config['dataset']}.intent", {})
    return entry.get("form", "dense")


class SemanticsError(UserError):
    """Semantic files are missing, stale or invalid; the message says which file and why."""


class MissingSemantics(SemanticsError):
    """A dataset has no semantics of a kind yet (no manifest): a first run's normal state."""


def semantics_dir(config):
    """Folder of a dataset's semantic files: ``semantics_dir`` (a relative one is inside the
    dataset's folder, e.g. ``semantics_dir: categories``), else the dataset's folder."""
    folder = config["semantics_dir"]
    if not folder:
        return os.path.abspath(config["data_path"])
    return os.path.abspath(os.path.join(config["data_path"], os.path.expanduser(folder)))


def file_path(config, suffix):
    return os.path.join(semantics_dir(config), f"{config['dataset']}.{suffix}")


def manifest_path(config, kind):
    return file_path(config, f"{kind}.json")


def _vector_text(vector):
    return " ".join(f"{x:.6g}" for x in vector)


def write_table(path, header, rows):
    """Write one semantic file atomically; ``header`` is a suffix of :data:`HEADERS` or a list
    of ``name:type`` cells, and ``rows`` are tuples matching it."""
    header = HEADERS[header] if isinstance(header, str) else header

    def write(f):
        f.write("\t".join(header) + "\n")
        for row in rows:
            cells = [_vector_text(c) if isinstance(c, np.ndarray) else str(c) for c in row]
            f.write("\t".join(cells) + "\n")

    atomic_write(path, write)


def _open_table(path, expected):
    """The open file past its checked header, and its columns' names and kinds."""
    expected = HEADERS[expected] if isinstance(expected, str) else expected
    if not os.path.isfile(path):
        raise SemanticsError(f"Semantic file '{path}' does not exist.")
    f = open(path, encoding="utf-8")
    header = f.readline().rstrip("\n").split("\t")
    if header != expected:
        f.close()
        raise SemanticsError(f"'{path}' has header {header}, expected {expected}; regenerate it.")
    return f, [h.split(":")[0] for h in header], [h.split(":")[1] for h in header]


def _parse_line(path, line_number, line, names, kinds):
    """One line's values, as :func:`read_table` gives them."""
    cells = line.rstrip("\n").split("\t")
    if len(cells) != len(names):
        raise SemanticsError(
            f"'{path}' line {line_number} has {len(cells)} columns, expected {len(names)}."
        )
    values = []
    for kind, cell in zip(kinds, cells):
        if kind == "float_seq":
            try:
                values.append(np.array(cell.split(), dtype=np.float32))
            except ValueError as err:
                raise SemanticsError(f"'{path}' line {line_number}: {err}") from err
        elif kind == "token_seq":
            values.append(cell.split())
        elif kind == "float":
            values.append(float(cell))
        else:
            values.append(cell)
    return values


def read_table(path, expected):
    """Read a semantic file: ``{column name: list of str or float32 arrays}``; ``expected`` is
    a suffix of :data:`HEADERS` or the expected header."""
    f, names, kinds = _open_table(path, expected)
    with f:
        columns = {name: [] for name in names}
        for line_number, line in enumerate(f, start=2):
            for name, value in zip(names, _parse_line(path, line_number, line, names, kinds)):
                columns[name].append(value)
    return columns


#: characters of a float_seq block parsed in C (anything else, e.g. nan, is parsed per cell)
_NUMBER_CHARS = str.maketrans("", "", "0123456789.eE+- ")
#: whitespace that ``str.split()`` splits on besides the space (ASCII; others are non-ASCII)
_OTHER_SPACE = "\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _seq_block(kind, cells):
    """A block's ``(values, lengths)`` of a ``*_seq`` column parsed in one go, or None when a
    cell is not in the form the writer makes (single spaces, no empty cell, ASCII)."""
    joined = " ".join(cells)
    if (
        "" in cells
        or "  " in joined
        or joined[:1] == " "
        or joined[-1:] == " "
        or not joined.isascii()
        or any(c in joined for c in _OTHER_SPACE)
    ):
        return None
    lengths = np.fromiter((c.count(" ") + 1 for c in cells), dtype=np.int64, count=len(cells))
    if kind == "token_seq":
        return joined.split(" "), lengths
    if joined.translate(_NUMBER_CHARS):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # unparsable text: counted below
        values = np.fromstring(joined, dtype=np.float32, sep=" ")
    return (values, lengths) if len(values) == lengths.sum() else None


def _block(path, first_line, lines, names, kinds):
    """One block of :func:`read_columns`; a block not in the writer's form is parsed line by
    line (which raises :func:`read_table`'s error for a malformed line)."""
    if lines[-1][-1:] != "\n":
        lines[-1] += "\n"
    width = len(names) - 1
    if all(line.count("\t") == width for line in lines):
        cells = "".join(lines).replace("\n", "\t").split("\t")
        block = {}
        for j, (name, kind) in enumerate(zip(names, kinds)):
            column = cells[j : len(cells) - 1 : len(names)]
            if kind.endswith("_seq"):
                column = _seq_block(kind, column)
                if column is None:
                    break
            elif kind == "float":
                column = [float(c) for c in column]
            block[name] = column
        else:
            return block
    rows = [_parse_line(path, first_line + k, line, names, kinds) for k, line in enumerate(lines)]
    block = {}
    for j, (name, kind) in enumerate(zip(names, kinds)):
        column = [row[j] for row in rows]
        if kind.endswith("_seq"):
            lengths = np.array([len(v) for v in column], dtype=np.int64)
            if kind == "float_seq":
                values = np.concatenate(column) if column else np.zeros(0, dtype=np.float32)
            else:
                values = [t for cell in column for t in cell]
            column = (values, lengths)
        block[name] = column
    return block


def read_columns(path, expected, block_rows=1_000_000):
    """Read a semantic file a block of rows at a time: yields ``{column name: values}`` per
    block. A ``token`` column is a list of str and a ``float`` one a list of floats, as in
    :func:`read_table`; a ``float_seq`` or ``token_seq`` column is ``(values, lengths)``, every
    row's values one after the other (a float32 array, a list of str) and how many each row
    has. The values are exactly :func:`read_table`'s, parsed a block at a time in C instead of
    cell by cell (a file of millions of rows), and a malformed line raises the same error."""
    f, names, kinds = _open_table(path, expected)
    with f:
        first_line = 2
        while True:
            lines = list(itertools.islice(f, block_rows))
            if not lines:
                return
            yield _block(path, first_line, lines, names, kinds)
            first_line += len(lines)


def check_lengths(path, column_name, lengths, dim, first_row=1):
    """:func:`stack_vectors`' length check on the row lengths of a block of ``read_columns``
    whose first row is ``first_row``."""
    wrong = np.flatnonzero(lengths != dim)
    if len(wrong):
        raise SemanticsError(
            f"'{path}' row {first_row + int(wrong[0])}: {column_name} has "
            f"{int(lengths[wrong[0]])} values, expected {dim} (see its manifest); regenerate the "
            "semantics."
        )


def check_finite(path, column_name, matrix):
    """:func:`stack_vectors`' NaN/inf check on an ``[n, dim]`` matrix."""
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise SemanticsError(f"'{path}' row {bad + 1}: {column_name} contains NaN or inf.")


def read_vectors(path, expected, key, column_name, dim):
    """``(keys, [n, dim] float32)`` of a file with one key column and one ``float_seq``
    column, read with :func:`read_columns` and checked as :func:`stack_vectors` checks."""
    keys, values, lengths = [], [], []
    for block in read_columns(path, expected):
        keys += block[key]
        values.append(block[column_name][0])
        lengths.append(block[column_name][1])
    check_lengths(path, column_name, np.concatenate(lengths or [np.zeros(0, np.int64)]), dim)
    matrix = np.concatenate(values).reshape(-1, dim) if values else np.zeros((0, dim), np.float32)
    check_finite(path, column_name, matrix)
    return keys, matrix


def stack_vectors(path, column_name, vectors, dim):
    """Stack float_seq cells into ``[n, dim]``, rejecting a wrong length or NaN/inf."""
    check_lengths(path, column_name, np.array([len(v) for v in vectors], dtype=np.int64), dim)
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    check_finite(path, column_name, matrix)
    return matrix


def input_hashes(config, suffixes=("inter", "item")):
    """sha256 of the dataset files the semantics were made from (benchmark files included)."""
    folder, name = config["data_path"], config["dataset"]
    files = [f"{name}.{s}" for s in suffixes]
    for part in config["benchmark_filename"] or []:
        files.append(f"{name}.{part}.inter")
    return {
        f: file_sha256(os.path.join(folder, f))
        for f in files
        if os.path.isfile(os.path.join(folder, f))
    }


def settings_hash(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def write_manifest(config, kind, manifest):
    """Write a manifest atomically, adding the hashes of the files it describes."""
    for name, info in manifest["files"].items():
        info["sha256"] = file_sha256(os.path.join(semantics_dir(config), name))
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, **manifest}
    path = manifest_path(config, kind)
    atomic_write(path, lambda f: json.dump(manifest, f, indent=1, sort_keys=True))
    return path


def default_command(config, kind):
    """The plain command that creates a dataset's semantics (the semantic step's own messages
    repeat every setting a run changed, see :func:`recbole_llm.semantics.settings.command`)."""
    model = "EIMF" if kind == "eimf" else "LLM4SBR"
    return f"python run_recbole_llm.py --model={model} --dataset={config['dataset']} --semantics"


def read_manifest(config, kind, settings=None, command=None):
    """Read and check a manifest against the current inputs and ``settings``.

    Raises :class:`SemanticsError` naming the file and the command that (re)creates it when the
    manifest is missing, of another format, made from other inputs or with other settings, or
    when one of its files was changed since. With ``settings`` None the settings are not
    checked: the semantic step checks them before a dataset is built (see
    :func:`attach_manifest`); a dataset built directly checks the rest.
    """
    if command is None:
        command = default_command(config, kind)
    path = manifest_path(config, kind)
    if not os.path.isfile(path):
        raise MissingSemantics(
            f"No {kind} semantics for dataset '{config['dataset']}' ('{path}' is missing). "
            f"Create them with: {command}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise SemanticsError(
            f"'{path}' is not a readable manifest ({err}): it was cut short or edited. "
            f"Regenerate with: {command}"
        ) from None
    if not isinstance(manifest, dict):
        raise SemanticsError(f"'{path}' is not a JSON object manifest. Regenerate with: {command}")
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("kind") != kind:
        raise SemanticsError(f"'{path}' is not a {kind} manifest of format {MANIFEST_FORMAT}.")
    current = input_hashes(config)
    for name, digest in manifest["inputs"].items():
        if current.get(name) != digest:
            raise SemanticsError(
                f"Stale semantics: '{name}' changed since '{path}' was made. Regenerate with: "
                f"{command}"
            )
    if settings is not None and manifest["settings_hash"] != settings_hash(settings):
        made, now, absent = manifest["settings"], json.loads(json.dumps(settings, default=str)), []
        changed = sorted(k for k in {*made, *now} if made.get(k, absent) != now.get(k, absent))
        raise SemanticsError(
            f"Stale semantics: '{path}' was made with other settings ({', '.join(changed)}). "
            f"Regenerate with: {command}"
        )
    for name, info in manifest["files"].items():
        file = os.path.join(semantics_dir(config), name)
        if not os.path.isfile(file) or file_sha256(file) != info["sha256"]:
            raise SemanticsError(
                f"'{file}' is missing or was changed after '{path}' was written. Regenerate with: "
                f"{command}"
            )
    return manifest


#: Attribute of a Config (not a config key: never logged, saved or part of a run's identity)
#: holding the manifests the semantic step checked for it, by kind.
_CHECKED = "checked_semantics"


def attach_manifest(config, kind, manifest):
    """Hand the dataset built next from ``config`` the manifest the semantic step checked
    against the run's settings; None: build it without these semantics."""
    checked = dict(getattr(config, _CHECKED, None) or {})
    checked[kind] = manifest
    setattr(config, _CHECKED, checked)


def attached_manifest(config, kind):
    """``(True, manifest or None)`` as :func:`attach_manifest` left it, else ``(False, None)``:
    the dataset is built directly, not through an entry point."""
    checked = getattr(config, _CHECKED, None) or {}
    if kind in checked:
        return True, checked[kind]
    return False, None
