"""On-disk caches for LLM replies and text embeddings: append-only, crash-safe, resumable,
shared safely by several processes.

A reply is keyed by a hash of the whole request: the model's identity (the weights file's
sha256 for local models, the served name for servers), the full chat messages and the decoding
parameters, not the backend, so a reply made by one backend serves another running the same
weights. An embedding is keyed by the encoder's identity and the text.

A run killed at any point (Ctrl-C or kill -9) loses at most what it was writing: a torn last
line or row is dropped when the cache is opened again. A reply file is read as bytes and
decoded line by line, so a line that is not a JSON object with a ``key`` and a ``text`` (or not
UTF-8) is skipped and counted, with one warning naming the file. The embedding vectors are
checked against their keys (count and hash, in ``meta.json``) when opened; a cache whose keys
and vectors disagree is rebuilt, never read.

Processes sharing a cache (``llm_shard``, or two runs at once) take ``flock`` locks on files
beside it (Linux and macOS): appends and repairs are exclusive, and a process generating a
batch of prompts holds that batch's claim, so another one waits for its replies instead of
asking the LLM again.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import time
from logging import getLogger

import numpy as np

from recbole_llm.utils import atomic_write

#: Batches map onto this many claim files (two batches sharing one only wait for each other).
CLAIM_SLOTS = 64


def request_key(model_identity, messages, decoding):
    """The cache key of one LLM request."""
    payload = json.dumps(
        {"model": model_identity, "messages": messages, "decoding": decoding},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def file_lock(path, wait=True):
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block; yields
    False instead of waiting when ``wait`` is off and another process (or thread) holds it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _is_entry(entry):
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("text"), str)
    )


def read_reply_lines(data):
    """Entries from the complete lines of ``data`` (bytes): ``(entries by key, bytes used,
    malformed lines)``. A tail without its newline (a torn write) is left unread."""
    end = data.rfind(b"\n") + 1
    entries, malformed = {}, 0
    for raw in data[:end].split(b"\n")[:-1]:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is one
            entry = None
        if _is_entry(entry):
            entries[entry["key"]] = entry
        else:
            malformed += 1
    return entries, end, malformed


def _warn_malformed(path, malformed):
    if malformed:
        getLogger().warning(
            f"Reply cache '{path}': skipped {malformed} malformed line(s) (not a JSON object "
            "with a 'key' and a 'text'); their prompts are asked again. The lines stay in the "
            "file; delete them to silence this warning."
        )


class ReplyCache:
    """LLM replies in a JSON-lines file, plus optional read-only files (e.g. shipped replies)."""

    def __init__(self, path, read_only_paths=()):
        self.path = path
        self.lock_path = path + ".lock"
        self.entries = {}
        self.malformed = 0  # lines skipped when reading, over every file
        self._offset = 0  # bytes of ``path`` read so far (the file only grows)
        self._held = {}  # claim slot -> [its lock, batches holding it]
        for extra in read_only_paths:
            with open(extra, "rb") as f:
                entries, _, malformed = read_reply_lines(f.read())
            _warn_malformed(extra, malformed)
            self.malformed += malformed
            self.entries.update(entries)
        self._drop_torn_tail()
        self.reload(warn=True)

    def reload(self, warn=False):
        """Read the lines other processes appended to the file since it was last read."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            entries, used, malformed = read_reply_lines(f.read())
        self._offset += used
        self.malformed += malformed
        self.entries.update(entries)
        if warn or malformed:
            _warn_malformed(self.path, malformed)

    def _drop_torn_tail(self):
        """Cut a last line without its newline, whatever it ends in (a multi-byte character
        included): under the lock, so that no live writer is mid-append."""
        if not os.path.exists(self.path) or self._ends_complete():
            return
        with file_lock(self.lock_path):
            with open(self.path, "rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    cut = data.rfind(b"\n") + 1
                    f.truncate(cut)
                    getLogger().info(
                        f"Reply cache '{self.path}': dropped a torn last line of "
                        f"{len(data) - cut} bytes (an interrupted write)"
                    )

    def _ends_complete(self):
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __contains__(self, key):
        return key in self.entries

    def __len__(self):
        return len(self.entries)

    def get(self, key):
        return self.entries.get(key)

    @contextlib.contextmanager
    def claim(self, keys, wait=True):
        """A context manager holding the claim on the batch of ``keys`` (True), or False when
        ``wait`` is off and another process is generating a batch of the same claim slot."""
        slot = self.acquire(keys, wait=wait)
        try:
            yield slot is not None
        finally:
            if slot is not None:
                self.release(slot)

    def acquire(self, keys, wait=True):
        """Take the claim on the batch of ``keys``: its slot, or None when ``wait`` is off and
        another process holds the slot. Several batches in flight at once (a server's window)
        may share a slot: this cache holds its lock until the last of them is released. To be
        called from one thread."""
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        slot = int(digest[:8], 16) % CLAIM_SLOTS
        held = self._held.get(slot)
        if held is not None:  # ours already: no other process can take it meanwhile
            held[1] += 1
            return slot
        lock = file_lock(f"{self.path}.claims/{slot:02d}.lock", wait=wait)
        if not lock.__enter__():
            lock.__exit__(None, None, None)
            return None
        self._held[slot] = [lock, 1]
        return slot

    def release(self, slot):
        """Give back one :meth:`acquire` of ``slot``; the last one unlocks it."""
        held = self._held[slot]
        held[1] -= 1
        if held[1] == 0:
            del self._held[slot]
            held[0].__exit__(None, None, None)

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
        with file_lock(self.lock_path):
            with open(self.path, "ab") as f:
                f.write("".join(lines).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())

    def put_all(self, entries):
        """Add entries all at once or not at all (an import): the file is rewritten whole, its
        complete lines plus the new ones, and renamed into place (:func:`atomic_write`), so a
        process killed meanwhile leaves it as it was. Other processes' offsets stay valid: the
        file only grows."""
        if not entries:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        new = "".join(
            json.dumps({"created": stamp, **entry}, ensure_ascii=False) + "\n" for entry in entries
        ).encode("utf-8")
        with file_lock(self.lock_path):
            data = b""
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    data = f.read()
            data = data[: data.rfind(b"\n") + 1]  # a torn tail goes, as on opening

            def write(f):
                f.write(data + new)
                f.flush()
                os.fsync(f.fileno())

            atomic_write(self.path, write, binary=True)
        self.reload()


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
