"""On-disk caches for LLM replies and text embeddings: append-only, crash-safe, resumable.

A reply is keyed by a hash of the whole request: the model's identity (the weights file's
sha256 for local models, the served name for servers), the full chat messages and the decoding
parameters, not the backend, so a reply made by one backend serves another running the same
weights. An embedding is keyed by the encoder's identity and the text.

A run killed at any point (Ctrl-C or kill -9) loses at most what it was writing: a torn last
line or row is dropped when the cache is opened again.
"""

import hashlib
import json
import os
import time

import numpy as np


def request_key(model_identity, messages, decoding):
    """The cache key of one LLM request."""
    payload = json.dumps(
        {"model": model_identity, "messages": messages, "decoding": decoding},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _read_jsonl(path):
    entries = {}
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line of an interrupted write
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            entries[entry["key"]] = entry
    return entries


class ReplyCache:
    """LLM replies in a JSON-lines file, plus optional read-only files (e.g. shipped replies)."""

    def __init__(self, path, read_only_paths=()):
        self.path = path
        self.entries = {}
        for extra in read_only_paths:
            self.entries.update(_read_jsonl(extra))
        self.entries.update(_read_jsonl(path))
        self._drop_torn_tail()

    def reload(self):
        """Read entries other processes appended to the file since it was opened."""
        self.entries.update(_read_jsonl(self.path))

    def _drop_torn_tail(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def __contains__(self, key):
        return key in self.entries

    def __len__(self):
        return len(self.entries)

    def get(self, key):
        return self.entries.get(key)

    def put_many(self, entries):
        """Append entries (dicts with ``key`` and ``text``) and make them durable."""
        if not entries:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        lines = []
        for entry in entries:
            entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}
            self.entries[entry["key"]] = entry
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())


def text_key(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings of texts for one encoder: ``vectors.f32`` rows and ``keys.txt`` lines."""

    def __init__(self, folder, dim):
        self.folder = folder
        self.dim = dim
        os.makedirs(folder, exist_ok=True)
        self.vectors_path = os.path.join(folder, "vectors.f32")
        self.keys_path = os.path.join(folder, "keys.txt")
        meta_path = os.path.join(folder, "meta.json")
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                stored = json.load(f)["dim"]
            if stored != dim:
                raise ValueError(f"Embedding cache '{folder}' holds {stored}-d vectors, not {dim}")
        else:
            with open(meta_path, "w", encoding="utf-8") as f:
                json.dump({"dim": dim}, f)
        self.index = self._load()

    def _load(self):
        keys = []
        if os.path.exists(self.keys_path):
            with open(self.keys_path, encoding="utf-8") as f:
                keys = [line.rstrip("\n") for line in f if line.endswith("\n")]
        row_bytes = 4 * self.dim
        rows = (
            os.path.getsize(self.vectors_path) // row_bytes
            if os.path.exists(self.vectors_path)
            else 0
        )
        count = min(rows, len(keys))
        # make both files agree on the rows that were written completely
        if os.path.exists(self.vectors_path):
            with open(self.vectors_path, "rb+") as f:
                f.truncate(count * row_bytes)
        with open(self.keys_path, "w", encoding="utf-8") as f:
            f.writelines(k + "\n" for k in keys[:count])
        return {key: row for row, key in enumerate(keys[:count])}

    def __len__(self):
        return len(self.index)

    def lookup(self, keys):
        """``(vectors [n, dim] with zeros where missing, found mask [n])``."""
        found = np.array([k in self.index for k in keys], dtype=bool)
        vectors = np.zeros((len(keys), self.dim), dtype=np.float32)
        if found.any():
            stored = np.fromfile(self.vectors_path, dtype=np.float32).reshape(-1, self.dim)
            rows = [self.index[k] for k, hit in zip(keys, found) if hit]
            vectors[found] = stored[rows]
        return vectors, found

    def add(self, keys, vectors):
        """Append new vectors (rows of ``vectors``) under ``keys``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with open(self.vectors_path, "ab") as f:
            f.write(vectors.tobytes())
            f.flush()
            os.fsync(f.fileno())
        with open(self.keys_path, "a", encoding="utf-8") as f:
            f.writelines(k + "\n" for k in keys)
            f.flush()
            os.fsync(f.fileno())
        start = len(self.index)
        for offset, key in enumerate(keys):
            self.index.setdefault(key, start + offset)
