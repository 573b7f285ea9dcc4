"""The on-disk cache of LLM replies: append-only, crash-safe, resumable, shared safely by
several processes (the text embeddings' is :mod:`~recbole_llm.semantics.embedding_cache`).

A reply is keyed by a hash of the whole request: the model's identity (the weights file's
sha256 for local models, the served name for servers), the full chat messages and the decoding
parameters, not the backend, so a reply made by one backend serves another running the same
weights.

A run killed at any point (Ctrl-C or kill -9) loses at most what it was writing: a torn last
line is dropped when the cache is opened again (or by the next append). A reply file is read
as bytes and decoded line by line, so a line that is not a JSON object with a ``key`` and a
``text`` (or not UTF-8) is skipped and counted, with one warning naming the file.

Replies are not held in memory: the reply cache indexes where each key's line is
(:mod:`~recbole_llm.semantics.reply_index`, 28 bytes a reply) and reads a line when its reply
is used, so millions of cached replies cost tens of megabytes.

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

from recbole_llm.semantics.reply_index import ReplyIndex, is_entry
from recbole_llm.utils import atomic_write

#: Batches map onto this many claim files (two batches sharing one only wait for each other).
CLAIM_SLOTS = 64


#: The JSON of request keys and of cache lines: json.dumps's text with these options, from
#: encoders made once (json.dumps makes one per call when given options).
_KEY_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_LINE_JSON = json.JSONEncoder(ensure_ascii=False)
#: Bytes of a reply file read (and indexed) at once.
READ_BLOCK = 1 << 24


def request_key(model_identity, messages, decoding):
    """The cache key of one LLM request: the sha256 of the sorted-key JSON of
    ``{"decoding", "messages", "model"}`` (:func:`request_keys`)."""
    return request_keys(model_identity, [messages], decoding)[0]


def request_keys(model_identity, requests, decoding):
    """The cache key of each request (chat messages), with the JSON of the model and decoding
    made once: the text is ``json.dumps({"decoding": ..., "messages": ..., "model": ...},
    sort_keys=True, ensure_ascii=False)``, a dict's JSON being its sorted items' in order."""
    head = '{"decoding": ' + _KEY_JSON.encode(decoding) + ', "messages": '
    tail = ', "model": ' + _KEY_JSON.encode(model_identity) + "}"
    encode, sha256 = _KEY_JSON.encode, hashlib.sha256
    return [
        sha256((head + encode(messages) + tail).encode("utf-8")).hexdigest()
        for messages in requests
    ]


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


def read_reply_lines(data, start=0):
    """The reply entries among the complete lines of ``data`` (bytes found at byte ``start`` of
    a file): ``([(key, offset, length)] in file order, bytes used, malformed lines)``. A tail
    without its newline (a torn write) is left unread."""
    end = data.rfind(b"\n") + 1
    lines, malformed, at = [], 0, start
    for raw in data[:end].split(b"\n")[:-1]:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is one
            entry = None
        if is_entry(entry):
            lines.append((entry["key"], at, len(raw) + 1))
        else:
            malformed += 1
        at += len(raw) + 1
    return lines, end, malformed


def complete_length(f):
    """Bytes of the open binary file ``f`` up to the end of its last complete line."""
    end = os.fstat(f.fileno()).st_size
    while end > 0:
        start = max(0, end - (1 << 20))
        block = os.pread(f.fileno(), end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _warn_malformed(path, malformed):
    if malformed:
        getLogger().warning(
            f"Reply cache '{path}': skipped {malformed} malformed line(s) (not a JSON object "
            "with a 'key' and a 'text'); their prompts are asked again. The lines stay in the "
            "file; delete them to silence this warning."
        )


class ReplyCache:
    """LLM replies in a JSON-lines file, plus optional read-only files (e.g. shipped replies),
    whose replies win over the file's own for the same prompt.

    Only the index of the replies is in memory (:class:`ReplyIndex`, 28 bytes a reply); an
    entry is read from its file when asked for (:meth:`get`, or :meth:`find` and :meth:`read`
    for many at once)."""

    def __init__(self, path, read_only_paths=()):
        self.path = path
        self.lock_path = path + ".lock"
        self.index = ReplyIndex()
        self.malformed = 0  # lines skipped when reading, over every file
        self._source = None  # the index's number of ``path``, once the file exists
        self._offset = 0  # bytes of ``path`` read so far (the file only grows)
        self._held = {}  # claim slot -> [its lock, batches holding it]
        for extra in read_only_paths:
            source = self.index.add_source(extra)
            # a named file's replies are what a run asked for: the cache's own lines for the
            # same prompts (another backend's, or an older version's) do not replace them
            self.index.pinned.add(source)
            _, malformed = self._scan(source, 0)
            _warn_malformed(extra, malformed)
            self.malformed += malformed
        self._drop_torn_tail()
        self.reload(warn=True)

    def _scan(self, source, offset):
        """Index the complete lines of ``source`` from byte ``offset`` on, a block at a time:
        ``(the offset after the last complete line, malformed lines)``."""
        fd, malformed, size = self.index.file(source).fileno(), 0, READ_BLOCK
        while True:
            data = os.pread(fd, size, offset)
            lines, used, bad = read_reply_lines(data, offset)
            if not used:
                if len(data) < size:  # the end, or a torn tail
                    return offset, malformed
                size *= 2  # a line longer than the block
                continue
            self.index.add(source, lines)
            malformed, offset, size = malformed + bad, offset + used, READ_BLOCK

    def reload(self, warn=False):
        """Read the lines other processes appended to the file since it was last read."""
        if self._source is None:
            if not os.path.exists(self.path):
                return
            self._source = self.index.add_source(self.path)
        elif not self.index.same_file(self._source):
            self.index.reopen(self._source)  # rewritten by put_all: the same lines, and more
        if os.fstat(self.index.file(self._source).fileno()).st_size == self._offset:
            return
        self._offset, malformed = self._scan(self._source, self._offset)
        self.malformed += malformed
        if warn or malformed:
            _warn_malformed(self.path, malformed)

    def _drop_torn_tail(self):
        """Cut a last line without its newline, whatever it ends in (a multi-byte character
        included): under the lock, so that no live writer is mid-append."""
        if not os.path.exists(self.path) or self._ends_complete():
            return
        with file_lock(self.lock_path):
            with open(self.path, "rb+") as f:
                size = os.fstat(f.fileno()).st_size
                cut = complete_length(f)
                if cut < size:
                    f.truncate(cut)
                    getLogger().info(
                        f"Reply cache '{self.path}': dropped a torn last line of "
                        f"{size - cut} bytes (an interrupted write)"
                    )

    def _ends_complete(self):
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __contains__(self, key):
        return self.index.find([key])[0][0] >= 0

    def __len__(self):
        return len(self.index)

    def get(self, key):
        """The entry of ``key`` (a dict with its ``text``), or None."""
        where, length = self.index.find([key])
        return self.index.read(where[0], length[0], key) if where[0] >= 0 else None

    def find(self, keys):
        """Where the entries of ``keys`` are: ``(where, length)`` arrays, ``where`` -1 for a key
        not cached; :meth:`read` reads one."""
        return self.index.find(keys)

    def read(self, where, length):
        """The entry at a location :meth:`find` gave."""
        return self.index.read(where, length)

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
        """Append entries (dicts with ``key`` and ``text``) and make them durable. What other
        processes appended meanwhile is read first, and a torn tail a killed writer left is
        cut (under the lock no writer is live), so the new lines are indexed where they are
        written without reading them back."""
        if not entries:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        lines = [
            (_LINE_JSON.encode({"created": stamp, **entry}) + "\n").encode("utf-8")
            for entry in entries
        ]
        with file_lock(self.lock_path):
            self.reload()
            with open(self.path, "ab") as f:
                start = os.fstat(f.fileno()).st_size
                if start > self._offset:  # a torn tail past the complete lines
                    f.truncate(self._offset)
                    getLogger().info(
                        f"Reply cache '{self.path}': dropped a torn last line of "
                        f"{start - self._offset} bytes (an interrupted write)"
                    )
                    start = self._offset
                f.write(b"".join(lines))
                f.flush()
                os.fsync(f.fileno())
            if self._source is None:
                self._source = self.index.add_source(self.path)
            located, at = [], start
            for entry, line in zip(entries, lines):
                located.append((entry["key"], at, len(line)))
                at += len(line)
            self.index.add(self._source, located)
            self._offset = at

    def put_all(self, entries):
        """Add entries all at once or not at all (an import): the file is rewritten whole, its
        complete lines plus the new ones, and renamed into place (:func:`atomic_write`), so a
        process killed meanwhile leaves it as it was. Other processes' offsets stay valid: the
        file only grows."""
        if not entries:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        new = "".join(
            _LINE_JSON.encode({"created": stamp, **entry}) + "\n" for entry in entries
        ).encode("utf-8")
        with file_lock(self.lock_path):

            def write(f):
                if os.path.exists(self.path):
                    with open(self.path, "rb") as old:
                        left = complete_length(old)  # a torn tail goes, as on opening
                        while left:
                            block = old.read(min(left, READ_BLOCK))
                            f.write(block)
                            left -= len(block)
                f.write(new)
                f.flush()
                os.fsync(f.fileno())

            atomic_write(self.path, write, binary=True)
        self.reload()
