"""The reply cache's index and the generator's chunks give what one pass over a dict gave:
the same replies, batches, statistics and shards in chunks of any size, no slice of the
requests larger than a chunk, later lines replacing earlier ones, and fingerprints that share
their first half told apart."""

import collections
import collections.abc
import json

import numpy as np
import pytest

from recbole_llm.semantics import batch, reply_index
from recbole_llm.semantics.backends import Generation
from recbole_llm.semantics.cache import ReplyCache
from recbole_llm.semantics.generator import CachedGenerator, ShardDone

DECODING = {"max_new_tokens": 8, "greedy": True}


def messages(text):
    return [{"role": "user", "content": text}]


class Echo:
    """A batched backend whose reply names its prompt and the batch it came in (so other
    batches would show); prompts containing 'fail' fail."""

    name = "echo"

    def __init__(self):
        self.batches = []

    def generate(self, batch, decoding):
        prompts = [m[0]["content"] for m in batch]
        self.batches.append(prompts)
        return [
            (
                Generation("", error=f"refused {p}", failure="refused")
                if "fail" in p
                else Generation(f"{p} | {prompts[0]} x {len(prompts)}", len(p), 2, 0.5)
            )
            for p in prompts
        ]


class Requests(collections.abc.Sequence):
    """Requests that record the slices the generator takes of them."""

    def __init__(self, items):
        self.items, self.sliced = items, []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            self.sliced.append(len(self.items[index]))
        return self.items[index]


def requests_with_repeats(n=60):
    texts = [f"p{(i * 7) % 23}" if i % 5 else f"fail {i % 4}" for i in range(n)]
    return [messages(t) for t in texts]


def generate(path, requests, chunk, refresh=False, **options):
    backend = Echo()
    generator = CachedGenerator(
        lambda: backend,
        "served:echo",
        ReplyCache(path),
        DECODING,
        refresh,
        progress=False,
        backend_name="echo",
    )
    replies, stats = generator.run(Requests(requests), 4, chunk_requests=chunk, **options)
    stats = {k: v for k, v in stats.as_dict().items() if not k.endswith("seconds")}
    return [(r.text, r.error, r.backend) for r in replies], stats, backend.batches


def test_chunks_of_any_size_give_one_passs_replies_batches_and_statistics(tmp_path):
    requests = requests_with_repeats()

    # one pass (the code before chunks gave these same replies, statistics and batches): a
    # batch whose prompts earlier batches answered is not asked; the rest are asked whole
    def three_runs(chunk):
        path = str(tmp_path / f"chunks-{chunk}.jsonl")
        # new, then all cached but the failures' batches (asked whole again), then refreshed
        return [generate(path, requests, chunk, refresh=run == 2) for run in range(3)]

    whole = three_runs(len(requests))
    # calls: the 23 distinct prompts once each, and the 12 failing requests each time their
    # batch is asked; a batch asked whole for one missing prompt keeps its others' replies
    assert [(r[1]["calls"], r[1]["cached"], len(r[2])) for r in whole] == [
        (35, 25, 14),
        (12, 48, 12),
        (35, 25, 14),
    ]
    texts = collections.defaultdict(set)  # a prompt gets one reply in a run
    for (text, error, _), request in zip(whole[0][0], requests):
        texts[request[0]["content"]].add(text or error)
    assert all(len(replies) == 1 for replies in texts.values())
    assert whole[0][1]["failed"] == 12 and whole[0][1]["replies_by_backend"] == {"echo": 48}
    for chunk in (1, 5, 8, 13):  # whole batches of 4: chunks of 4, 4, 8 and 12 requests
        assert three_runs(chunk) == whole

    lazy = Requests(requests)
    backend = Echo()
    CachedGenerator(
        lambda: backend, "served:echo", ReplyCache(str(tmp_path / "l.jsonl")), DECODING
    ).run(lazy, 4, chunk_requests=10)
    assert max(lazy.sliced) == 8, "no slice of the requests beyond a chunk (whole batches)"


def test_a_batch_regenerated_for_one_prompt_keeps_the_others_cached_replies(tmp_path):
    path = str(tmp_path / "replies.jsonl")
    requests = [messages(f"p{i}") for i in range(4)]
    cache = ReplyCache(path)
    keys = CachedGenerator(lambda: None, "served:echo", cache, DECODING).keys(requests)
    cache.put_many(
        [{"key": k, "text": f"other {i}", "backend": "other"} for i, k in enumerate(keys[:3])]
    )
    lines = len(open(path).read().splitlines())
    replies, stats, batches = generate(path, requests, chunk=4)
    assert batches == [["p0", "p1", "p2", "p3"]], "the whole batch, as a run from scratch forms it"
    assert replies[:3] == [(f"other {i}", None, "other") for i in range(3)]
    assert replies[3] == ("p3 | p0 x 4", None, "echo")
    assert stats["calls"] == 1 and stats["cached"] == 3
    assert len(open(path).read().splitlines()) == lines + 1, "only the missing reply is appended"


def test_a_named_reply_file_wins_over_the_caches_own_replies(tmp_path):
    cache_path, shipped = str(tmp_path / "replies.jsonl"), tmp_path / "shipped.jsonl"
    own = ReplyCache(cache_path)
    own.put_many([{"key": k, "text": f"old {k}"} for k in ("a", "b")])
    shipped.write_text("".join(json.dumps({"key": k, "text": f"shipped {k}"}) + "\n" for k in "bc"))
    cache = ReplyCache(cache_path, read_only_paths=[str(shipped)])
    assert [cache.get(k)["text"] for k in "abc"] == ["old a", "shipped b", "shipped c"]
    ReplyCache(cache_path).put_many([{"key": k, "text": f"new {k}"} for k in "bcd"])
    cache.reload()  # lines another process appended do not replace the named file's either
    assert [cache.get(k)["text"] for k in "abcd"] == ["old a", "shipped b", "shipped c", "new d"]
    assert len(cache) == 4
    fresh = ReplyCache(cache_path, read_only_paths=[str(shipped)])  # merged arrays alike
    fresh.index._merge()
    assert [fresh.get(k)["text"] for k in "abcd"] == ["old a", "shipped b", "shipped c", "new d"]


def test_shards_in_chunks_wait_for_each_other_and_together_give_one_run(tmp_path):
    requests = [messages(f"p{i}") for i in range(30)]
    single = generate(str(tmp_path / "single.jsonl"), requests, 64)
    shared = str(tmp_path / "shared.jsonl")
    # batches of 4 in chunks of 8: shard 1 has batches 1, 3, 5 and 7 (the last one of 2)
    with pytest.raises(ShardDone, match="shard 1/2 is done .14 prompts.*16 of 30 replies"):
        generate(shared, requests, 8, shard=(1, 2))
    replies, stats, batches = generate(shared, requests, 8, shard=(0, 2))
    assert replies == single[0] and len(batches) == 4
    assert stats["calls"] == 16 and stats["cached"] == 14
    assert stats["total_prompt_tokens"] == single[1]["total_prompt_tokens"]


def fill(path, count, offset=0):
    cache = ReplyCache(path)
    for start in range(0, count, 7):
        cache.put_many(
            [
                {"key": f"k{i}", "text": f"t{i + offset}"}
                for i in range(start, min(count, start + 7))
            ]
        )
    return cache


@pytest.mark.parametrize("halves", ["distinct", "one first half", "first half by length"])
def test_the_index_finds_each_keys_latest_line_across_merges(tmp_path, monkeypatch, halves):
    monkeypatch.setattr(reply_index, "MERGE_EVERY", 5)
    if halves != "distinct":  # fingerprints whose first halves coincide: the second decides
        real = reply_index.fingerprints

        def weak(keys):
            pair = real(keys).copy()
            pair[:, 0] = 3 if halves == "one first half" else [len(k) for k in keys]
            return pair

        monkeypatch.setattr(reply_index, "fingerprints", weak)
    shipped = tmp_path / "shipped.jsonl"
    lines = [{"key": "a", "text": "old a"}, {"key": "b", "text": "b"}, {"key": "a", "text": "a"}]
    shipped.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    path = str(tmp_path / "replies.jsonl")
    cache = fill(path, 40)
    cache.put_many([{"key": "k3", "text": "new k3"}, {"key": "b", "text": "ours"}])
    reader = ReplyCache(path, read_only_paths=[str(shipped)])  # another process's view
    for view in (cache, reader, ReplyCache(path, read_only_paths=[str(shipped)])):
        assert view.get("k3")["text"] == "new k3" and view.get("k39")["text"] == "t39"
        assert view.get("k40") is None and "k40" not in view and "k0" in view
    assert len(cache) == 41 and len(reader) == 42  # the shipped 'a' is the reader's too
    reopened = ReplyCache(path)  # every line merged into the sorted arrays
    assert "a" not in reopened and reopened.get("a") is None  # by length, 'b' shares a half
    # the shipped file's latest 'a', and its 'b' over the cache's own (a named file wins)
    assert reader.get("a")["text"] == "a" and reader.get("b")["text"] == "b"
    where, length = reader.find(["k7", "zz", "a"])
    assert where[1] == -1 and reader.read(where[0], length[0])["text"] == "t7"

    # an import rewrites the file and renames it into place: an open reader follows it
    cache.put_all([{"key": f"k{i}", "text": f"import {i}"} for i in range(38, 45)])
    reader.reload()
    assert [reader.get(f"k{i}")["text"] for i in (37, 38, 44)] == ["t37", "import 38", "import 44"]
    assert len(reader) == 42 + 5 and len(ReplyCache(path)) == 41 + 5


def test_an_append_cuts_a_killed_writers_torn_tail_and_reads_others_lines_first(tmp_path):
    path = str(tmp_path / "replies.jsonl")
    ours, theirs = fill(path, 3), ReplyCache(path)
    theirs.put_many([{"key": "theirs", "text": "x"}])
    with open(path, "ab") as f:
        f.write(b'{"key": "torn", "te')  # a kill -9 in the middle of their next write
    ours.put_many([{"key": "ours", "text": "y"}])
    assert ours.get("theirs")["text"] == "x" and ours.get("ours")["text"] == "y"
    with open(path, "rb") as f:
        data = f.read()
    assert b"torn" not in data and data.endswith(b"\n")
    assert len(ReplyCache(path)) == 5 and ReplyCache(path).malformed == 0


def test_a_reply_read_back_must_be_the_line_indexed(tmp_path):
    path = str(tmp_path / "replies.jsonl")
    cache = fill(path, 3)
    with open(path, "r+b") as f:
        f.write(b"X")  # edited under a running step: the file must only grow
    with pytest.raises(ValueError, match="changed under a running step"):
        cache.get("k0")
    with pytest.raises(ValueError, match="no longer the reply indexed"):
        cache.index.read(*[a[0] for a in cache.find(["k1"])], key="k0")


def test_fingerprints_are_stable_and_differ_by_key():
    keys = [f"key {i}" for i in range(1000)] + ["\ud800 lone surrogate"]
    pair = reply_index.fingerprints(keys)
    assert pair.shape == (1001, 2) and pair.dtype == np.uint64
    assert np.array_equal(pair, reply_index.fingerprints(keys))
    assert len({(int(a), int(b)) for a, b in pair}) == 1001


@pytest.mark.parametrize("refresh", [False, True])
def test_a_batch_file_gets_each_missing_request_once_in_chunks(tmp_path, monkeypatch, refresh):
    requests = requests_with_repeats()
    path = str(tmp_path / "replies.jsonl")
    generate(path, requests[:21], 64)  # some cached, the failures not
    generator = CachedGenerator(
        lambda: Echo(), "served:echo", ReplyCache(path), DECODING, refresh, progress=False
    )
    keys = generator.keys(requests)
    cached = [k in generator.cache for k in keys]
    wanted = [k for k, hit in dict(zip(keys, cached)).items() if refresh or not hit]
    assert 0 < sum(cached) and len(wanted) < len(requests)
    for chunk in (1, 7, 1000):
        monkeypatch.setattr(batch, "CHUNK_REQUESTS", chunk)
        positions, uncached = batch.missing_requests(generator, requests)
        assert [keys[i] for i in positions] == wanted and uncached == cached.count(False)
        keyed = list(batch._keyed(generator, requests, positions))
        assert keyed == [(keys[i], requests[i]) for i in positions]
