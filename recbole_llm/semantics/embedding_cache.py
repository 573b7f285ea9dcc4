"""The on-disk cache of text embeddings, one folder per encoder: append-only, crash-safe,
shared safely by several processes (``flock`` on a file beside it).

An embedding is keyed by a hash of its text. The vectors are checked against their keys (count
and hash, in ``meta.json``) when opened; a cache whose keys and vectors disagree is rebuilt,
never read. A run killed at any point loses at most the rows it was appending.
"""

import hashlib
import json
import os
from logging import getLogger

import numpy as np

from recbole_llm.semantics.cache import file_lock
from recbole_llm.utils import atomic_write


def text_key(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _keys_digest(keys):
    return hashlib.sha256("".join(k + "\n" for k in keys).encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings of texts for one encoder: ``vectors.f32`` rows and ``keys.txt`` lines, one
    key per row, with ``meta.json`` holding the dimension, the row count and a hash of the
    keys. Opening it checks that the files agree; a cache whose keys do not match their
    hash (a stray, missing or edited line would shift every vector onto another text), or one
    that predates the check, is emptied and rebuilt with a warning naming the file."""

    def __init__(self, folder, dim):
        self.folder = folder
        self.dim = dim
        os.makedirs(folder, exist_ok=True)
        self.vectors_path = os.path.join(folder, "vectors.f32")
        self.keys_path = os.path.join(folder, "keys.txt")
        self.meta_path = os.path.join(folder, "meta.json")
        self.lock_path = os.path.join(folder, "lock")
        with file_lock(self.lock_path):
            self.keys = self._open()
        self.index = {}
        for row, key in enumerate(self.keys):
            self.index.setdefault(key, row)

    def _read_meta(self):
        if not os.path.exists(self.meta_path):
            return None
        try:
            with open(self.meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def _write_meta(self, keys):
        meta = {"dim": self.dim, "rows": len(keys), "keys_sha256": _keys_digest(keys)}
        atomic_write(self.meta_path, lambda f: json.dump(meta, f))

    def _read_keys(self):
        if not os.path.exists(self.keys_path):
            return []
        with open(self.keys_path, "rb") as f:
            data = f.read()
        lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
        return [line.decode("utf-8", "replace") for line in lines]

    def _rows_on_disk(self):
        if not os.path.exists(self.vectors_path):
            return 0
        return os.path.getsize(self.vectors_path) // (4 * self.dim)

    def _open(self):
        """The keys of the verified rows, after cutting what an interrupted append left."""
        meta = self._read_meta()
        if meta is not None and "dim" in meta and meta["dim"] != self.dim:
            raise ValueError(
                f"Embedding cache '{self.folder}' holds {meta['dim']}-d vectors, not {self.dim}"
            )
        keys, vector_rows = self._read_keys(), self._rows_on_disk()
        rows = (meta or {}).get("rows")
        problem = None
        if not keys and not vector_rows:
            rows = 0  # nothing to check (new, or emptied)
        elif not isinstance(rows, int) or "keys_sha256" not in meta:
            problem = (
                "has no row count and key hash (made by an older version, or meta.json is "
                "damaged)"
            )
        elif len(keys) < rows or vector_rows < rows:
            problem = (
                f"holds {len(keys)} keys and {vector_rows} vectors, fewer than the {rows} rows "
                "recorded in meta.json"
            )
        elif _keys_digest(keys[:rows]) != meta["keys_sha256"]:
            problem = "has keys that do not match their recorded hash (was keys.txt edited?)"
        if problem:
            getLogger().warning(
                f"Embedding cache '{self.keys_path}' {problem}; its keys and vectors cannot be "
                "trusted to line up, so it is emptied and rebuilt (texts are encoded again)."
            )
            rows = 0
        keys = keys[:rows]
        # what an interrupted append left past the recorded rows is cut, in both files
        key_bytes = len("".join(k + "\n" for k in keys).encode("utf-8"))
        for path, size in ((self.vectors_path, rows * 4 * self.dim), (self.keys_path, key_bytes)):
            if not os.path.exists(path) or os.path.getsize(path) != size:
                with open(path, "ab") as f:
                    f.truncate(size)
        if rows == 0:
            self._write_meta(keys)
        return keys

    def __len__(self):
        return len(self.index)

    def lookup(self, keys):
        """``(vectors [n, dim] with zeros where missing, found mask [n])``."""
        found = np.array([k in self.index for k in keys], dtype=bool)
        vectors = np.zeros((len(keys), self.dim), dtype=np.float32)
        if found.any():
            count = len(self.keys) * self.dim
            stored = np.fromfile(self.vectors_path, dtype=np.float32, count=count)
            stored = stored.reshape(-1, self.dim)
            rows = [self.index[k] for k, hit in zip(keys, found) if hit]
            vectors[found] = stored[rows]
        return vectors, found

    def add(self, keys, vectors):
        """Append new vectors (rows of ``vectors``) under ``keys``; rows another process
        appended meanwhile are read first, so every process's rows stay in line."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with file_lock(self.lock_path):
            self.keys = self._open()
            self.index = {}
            for row, key in enumerate(self.keys):
                self.index.setdefault(key, row)
            new = [i for i, key in enumerate(keys) if key not in self.index]
            keys, vectors = [keys[i] for i in new], vectors[new]
            with open(self.vectors_path, "ab") as f:
                f.write(vectors.tobytes())
                f.flush()
                os.fsync(f.fileno())
            with open(self.keys_path, "ab") as f:
                f.write("".join(k + "\n" for k in keys).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            start = len(self.keys)
            self.keys = self.keys + list(keys)
            self._write_meta(self.keys)
        for offset, key in enumerate(keys):
            self.index.setdefault(key, start + offset)
