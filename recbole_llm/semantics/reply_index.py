"""Where each cached LLM reply is: the reply cache's in-memory index (:class:`ReplyIndex`).

A reply cache of millions of replies is not held in memory: the index keeps, per distinct key,
a 128-bit fingerprint of the key (BLAKE2b) and where its line is (file, offset, length), 28
bytes a reply in sorted NumPy arrays, and reads a reply's line from its file when it is asked
for. Keys added since the arrays were last merged wait in a small dict.
Two distinct keys share a fingerprint with a probability of about n^2 / 2^129 (1e-26 for a
billion replies); a line read back is checked to be a reply entry whose key has the asked
fingerprint.

The files only grow (appends, or a rewrite that keeps every complete line where it was), so a
location stays valid; a later line of a key replaces an earlier one, and a file indexed later
replaces the earlier files, except that no line replaces one of a *pinned* source: the
read-only files a config names (``llm_reply_files``) win over the cache's own file.
"""

import hashlib
import json
import os

import numpy as np

#: Bits of a location that give the offset in its file (files up to 1 TB).
OFFSET_BITS = 40
#: Keys added before they are merged into the sorted arrays.
MERGE_EVERY = 1 << 16


def fingerprints(keys):
    """``[n, 2]`` uint64: the 128-bit BLAKE2b fingerprint of each key (a string)."""
    data = b"".join(
        hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        for key in keys
    )
    return np.frombuffer(data, dtype="<u8").reshape(-1, 2)


def is_entry(entry):
    """A reply entry: a JSON object with a string ``key`` and a string ``text``."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("text"), str)
    )


class ReplyIndex:
    """Distinct keys -> the location of their latest line, over one or more files."""

    def __init__(self):
        self.paths = []  # per source number
        self._files = []  # open binary files, per source number
        self._high = np.empty(0, dtype=np.uint64)  # sorted by (high, low)
        self._low = np.empty(0, dtype=np.uint64)
        self._where = np.empty(0, dtype=np.int64)  # source << OFFSET_BITS | offset
        self._length = np.empty(0, dtype=np.uint32)
        self._recent = {}  # key -> (where, length), not yet merged
        self._distinct = 0
        #: sources whose replies no other source's line replaces (files a config names)
        self.pinned = set()

    def __len__(self):
        return self._distinct

    def add_source(self, path):
        """Number a file whose lines are then :meth:`add`-ed; it is kept open for reading."""
        self.paths.append(path)
        self._files.append(open(path, "rb"))
        return len(self.paths) - 1

    def file(self, source):
        """The open binary file of ``source``."""
        return self._files[source]

    def reopen(self, source):
        """Read ``source`` through its path again (the file was replaced by a rewrite that kept
        its lines)."""
        self._files[source].close()
        self._files[source] = open(self.paths[source], "rb")

    def same_file(self, source):
        """Whether ``source``'s path still names the file open for it."""
        try:
            return os.path.samestat(
                os.fstat(self._files[source].fileno()), os.stat(self.paths[source])
            )
        except FileNotFoundError:
            return False

    def add(self, source, lines):
        """Index ``lines``: ``(key, offset, length)`` of lines of ``source`` in file order."""
        lines = list(lines)
        new = list({key: None for key, _, _ in lines if key not in self._recent})
        guard = bool(self.pinned) and source not in self.pinned
        held = set()  # keys a pinned source has, which this source's lines do not replace
        if new and len(self._high):
            rows = self._base_rows(fingerprints(new))
            in_base = rows >= 0
            self._distinct += int((~in_base).sum())
            if guard:
                sources = self._where[rows[in_base]] >> OFFSET_BITS
                found = [key for key, hit in zip(new, in_base) if hit]
                held = {key for key, s in zip(found, sources.tolist()) if s in self.pinned}
        else:
            self._distinct += len(new)
        for key, offset, length in lines:
            if guard and (
                key in held
                or (key in self._recent and self._recent[key][0] >> OFFSET_BITS in self.pinned)
            ):
                continue
            self._recent[key] = ((source << OFFSET_BITS) | offset, length)
        if len(self._recent) >= MERGE_EVERY:
            self._merge()

    def _merge(self):
        """Move the recent keys into the sorted arrays: a key there already gets its new
        location, the others are inserted in order."""
        if not self._recent:
            return
        fingerprint = fingerprints(self._recent)
        located = np.array(list(self._recent.values()), dtype=np.int64).reshape(-1, 2)
        self._recent = {}
        rows = self._base_rows(fingerprint)
        known = rows >= 0
        self._where[rows[known]] = located[known, 0]
        self._length[rows[known]] = located[known, 1]
        fingerprint, located = fingerprint[~known], located[~known]
        order = np.argsort(fingerprint[:, 0], kind="stable")
        fingerprint, located = fingerprint[order], located[order]
        at = np.searchsorted(self._high, fingerprint[:, 0])
        self._high = np.insert(self._high, at, fingerprint[:, 0])
        self._low = np.insert(self._low, at, fingerprint[:, 1])
        self._where = np.insert(self._where, at, located[:, 0])
        self._length = np.insert(self._length, at, located[:, 1].astype(np.uint32))

    def _base_rows(self, fingerprint):
        """Rows of the sorted arrays holding each fingerprint ``[n, 2]``, or -1 (the arrays are
        sorted by the fingerprint's first half; a row's second half must match too)."""
        rows = np.full(len(fingerprint), -1, dtype=np.int64)
        if not len(self._high):
            return rows
        high, low = fingerprint[:, 0], fingerprint[:, 1]
        first = np.searchsorted(self._high, high, side="left")
        last = np.searchsorted(self._high, high, side="right")
        one = np.flatnonzero(last - first == 1)
        hit = self._low[first[one]] == low[one]
        rows[one[hit]] = first[one[hit]]
        for i in np.flatnonzero(last - first > 1):  # first halves that coincide: rare
            for row in range(first[i], last[i]):
                if self._low[row] == low[i]:
                    rows[i] = row
        return rows

    def find(self, keys):
        """``(where, length)`` arrays of each key's line; ``where`` is -1 for a key not cached."""
        where = np.full(len(keys), -1, dtype=np.int64)
        length = np.zeros(len(keys), dtype=np.uint32)
        older = []
        for i, key in enumerate(keys):
            located = self._recent.get(key)
            if located is None:
                older.append(i)
            else:
                where[i], length[i] = located
        if older and len(self._high):
            rows = self._base_rows(fingerprints([keys[i] for i in older]))
            found = rows >= 0
            at = np.asarray(older, dtype=np.int64)[found]
            where[at], length[at] = self._where[rows[found]], self._length[rows[found]]
        return where, length

    def read(self, where, length, key=None):
        """The entry whose line is at ``where`` (``length`` bytes, its newline included);
        ``key`` given, it must be that key's entry."""
        source, offset = int(where) >> OFFSET_BITS, int(where) & ((1 << OFFSET_BITS) - 1)
        raw = os.pread(self._files[source].fileno(), int(length), offset)
        try:
            entry = json.loads(raw.decode("utf-8"))
        except ValueError:
            entry = None
        if not is_entry(entry) or (key is not None and entry["key"] != key):
            raise ValueError(
                f"Reply cache '{self.paths[source]}' changed under a running step: the line at "
                f"byte {offset} is no longer the reply indexed there. A reply file must only "
                "grow; run the step again to read it afresh."
            )
        return entry

    def close(self):
        """Close the files (the index is not read afterwards)."""
        for f in self._files:
            f.close()

    def __del__(self):
        self.close()
