"""The semantic step's fast paths at scale give exactly what the paths they replace gave: the
training histories without RecBole's augmentation, user vectors in chunks, typical users of
float32 vectors, sample prefixes, localisation in blocks, the block reader of semantic files, and
LLM4SBR's replies handled in chunks (the cache and generator's own tests are in
test_reply_chunks.py). (Their speed is measured by benchmarks/bench_scale.py, not here.)"""

import collections
import json
import os
import re
import zlib

import numpy as np
import pytest
from synthetic import SESSION_FORMAT

from recbole_llm.config import Config
from recbole_llm.semantic_step import plain_dataset, run_pipeline
from recbole_llm.semantics import files, generator, intents, prompts, shared
from recbole_llm.semantics.history import (
    sample_prefixes,
    split_training_histories,
    time_ordered_sequences,
    training_histories,
)
from recbole_llm.semantics.interests import UserTextVectors
from recbole_llm.semantics.typical import select_typical_users

OUTPUTS = ("intent", "itemtext")


def write_ties(folder, name="ties"):
    """Users of 1 to 9 interactions, in shuffled file order, with timestamps that tie (also
    after RecBole's float32 rounding: 1.6e9 + small offsets) within and across users."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, 81):
        for _ in range(int(rng.integers(1, 10))):
            stamp = 1_600_000_000 + int(rng.integers(0, 40)) * int(rng.choice([1, 50, 600]))
            rows.append((user, int(rng.integers(1, 30)), stamp))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    with open(os.path.join(folder, name, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in rows)


def ties_config(tmp_path, mode):
    """SASRec's config on a fresh tied-timestamp dataset in ``tmp_path``, split by ``mode``."""
    write_ties(str(tmp_path))
    return Config(
        model="SASRec",
        dataset="ties",
        config_dict={
            "data_path": str(tmp_path),
            "checkpoint_dir": str(tmp_path / "saved"),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {"split": {"LS": mode}, "order": "TO", "mode": "full"},
            "MAX_ITEM_LIST_LENGTH": 3,
            "state": "ERROR",
        },
    )


@pytest.mark.parametrize("mode", ["valid_and_test", "valid_only", "test_only"])
def test_split_histories_are_those_of_recboles_built_training_split(tmp_path, mode):
    config = ties_config(tmp_path, mode)
    fast = split_training_histories(plain_dataset(config))
    built = training_histories(plain_dataset(config).build()[0])
    assert list(fast.items()) == list(built.items())  # same users, same order, same items
    assert len(fast) > 60 and any(len(h) == 2 for h in fast.values())


def test_whole_sequences_continue_each_history_with_recboles_validation_item(tmp_path):
    """time_ordered_sequences sorts ties as RecBole does: each user's training history is its
    prefix, and the next item is the target of RecBole's validation sample (probes score it)."""
    config = ties_config(tmp_path, "valid_and_test")
    sequences = time_ordered_sequences(plain_dataset(config))
    histories = split_training_histories(plain_dataset(config))
    valid = plain_dataset(config).build()[1]
    users = [
        str(valid.field2id_token[valid.uid_field][u])
        for u in valid.inter_feat[valid.uid_field].tolist()
    ]
    items = [
        str(valid.field2id_token[valid.iid_field][i])
        for i in valid.inter_feat[valid.iid_field].tolist()
    ]
    assert len(users) > 30
    for user, item in zip(users, items):
        history = histories[user]
        assert sequences[user][: len(history)] == history
        assert sequences[user][len(history)] == item


def test_user_vectors_in_chunks_are_each_users_own_mean():
    rng = np.random.default_rng(0)
    item_vectors = rng.standard_normal((500, 24)).astype(np.float32)
    tokens = [f"i{k}" for k in range(500)]
    row_of = {t: k for k, t in enumerate(tokens)}
    histories = collections.OrderedDict(
        (f"u{u}", [tokens[k] for k in rng.integers(0, 500, int(rng.integers(1, 40)))])
        for u in range(300)
    )
    old = np.stack([item_vectors[[row_of[i] for i in h]].mean(0) for h in histories.values()])
    old /= np.linalg.norm(old, axis=1, keepdims=True).clip(1e-12)
    source = UserTextVectors(histories, row_of, item_vectors)
    for chunk in (1, 7, 65536):
        chunks = [source[start : start + chunk] for start in range(0, 300, chunk)]
        assert np.array_equal(np.concatenate(chunks), old)
    # on demand, any users in any order (clustering reads a sample, then blocks)
    picked = rng.permutation(300)[:57]
    assert np.array_equal(source[picked], old[picked])
    assert np.array_equal(source[10:90], old[10:90]) and source[[]].shape == (0, 24)


class CountingRows:
    """Rows made on demand, as ``UserTextVectors`` makes them, counting the most asked at once."""

    dtype = np.dtype(np.float32)

    def __init__(self, vectors):
        self.vectors, self.shape, self.most = vectors, vectors.shape, 0

    def __len__(self):
        return len(self.vectors)

    def __getitem__(self, index):
        rows = self.vectors[index]
        self.most = max(self.most, len(rows))
        return rows


def test_affinity_propagation_reads_a_sample_and_blocks_of_users_not_all():
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((9000, 8)).astype(np.float32)  # three blocks of the assignment
    users = [str(u) for u in range(9000)]
    kwargs = dict(method="ap", typical_ratio=0.01, max_ap_users=300, seed=5)
    rows = CountingRows(vectors)
    lazy = select_typical_users(users, rows, **kwargs)
    whole = select_typical_users(users, vectors, **kwargs)
    assert lazy.exemplars == whole.exemplars and len(lazy.exemplars) > 1
    assert np.array_equal(lazy.assignment, whole.assignment)
    assert rows.most == 4096  # a block, never the 9,000 rows
    # k-means needs every row at once: rows made on demand give the same typical users
    rows, kwargs = CountingRows(vectors[:600]), dict(method="kmeans", typical_ratio=0.02, seed=5)
    lazy = select_typical_users(users[:600], rows, **kwargs)
    whole = select_typical_users(users[:600], vectors[:600], **kwargs)
    assert lazy.exemplars == whole.exemplars and np.array_equal(lazy.assignment, whole.assignment)


def test_a_target_past_the_ap_sample_makes_every_sampled_user_typical(monkeypatch):
    from recbole_llm.semantics import typical

    def no_fit(*args):
        raise AssertionError("AP fitted although its answer is known")

    class Lines:  # the module's logger (caplog misses it once RecBole has set logging up)
        text = ""

        def info(self, message):
            pass

        def warning(self, message):
            Lines.text += message

    monkeypatch.setattr(typical, "_affinity_propagation", no_fit)
    monkeypatch.setattr(typical, "getLogger", Lines)
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((2000, 8)).astype(np.float32)
    users = [str(u) for u in range(2000)]
    # 5 % of 2,000 is 100 typical users, but AP may cluster only 60 of them
    picked = select_typical_users(users, vectors, typical_ratio=0.05, max_ap_users=60, seed=5)
    assert len(picked.exemplars) == 60 and picked.details["clusters"] == 60
    assert all(picked.assignment[e] == e for e in picked.exemplars)
    assert "ap_max_users" in Lines.text and "kmeans" in Lines.text
    # users with the same vector are one typical user, so none is asked for nobody
    same = np.repeat(rng.standard_normal((5, 8)).astype(np.float32), 8, axis=0)
    picked = select_typical_users([str(u) for u in range(40)], same, typical_ratio=1.0)
    assert picked.exemplars == [0, 8, 16, 24, 32] and picked.details["clusters"] == 5
    assert sorted(set(picked.assignment)) == picked.exemplars
    one = select_typical_users(["a"], np.ones((1, 4), np.float32))  # AP needs two users
    assert one.exemplars == [0] and one.mapping() == {"a": "a"}


@pytest.mark.parametrize("method", ["ap", "kmeans"])
def test_typical_users_of_float32_vectors_are_those_of_their_float64_copy(method):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5000, 8)).astype(np.float32)  # two blocks of the assignment
    users = [str(u) for u in range(5000)]
    kwargs = dict(method=method, typical_ratio=0.004, max_ap_users=300, seed=5)
    if method == "kmeans":
        vectors, users, kwargs["typical_ratio"] = vectors[:600], users[:600], 0.02
    float32 = select_typical_users(users, vectors, **kwargs)
    float64 = select_typical_users(users, vectors.astype(np.float64), **kwargs)
    assert float32.exemplars == float64.exemplars and len(float32.exemplars) > 1
    assert np.array_equal(float32.assignment, float64.assignment)


def test_sample_prefixes_are_each_rows_items(tmp_path):
    from synthetic import write_synthetic_sessions

    write_synthetic_sessions(str(tmp_path))
    config = Config(
        model="SASRec",
        dataset="synth-session",
        config_dict={
            "data_path": str(tmp_path),
            "checkpoint_dir": str(tmp_path / "saved"),
            **SESSION_FORMAT,
            "MAX_ITEM_LIST_LENGTH": 4,  # some prefixes are longer
            "state": "ERROR",
        },
    )
    for part in plain_dataset(config).build():
        inter = part.inter_feat
        lengths = inter["item_length"].tolist()
        rows = inter["item_id_list"]
        id2key, id2item = part.field2id_token["session_id"], part.field2id_token["item_id"]
        old = collections.OrderedDict(
            (str(id2key[k]), [str(id2item[i]) for i in rows[r, : lengths[r]].tolist()])
            for r, k in enumerate(inter["session_id"].tolist())
        )
        assert list(sample_prefixes(part, "session_id").items()) == list(old.items())


def test_localisation_of_gathered_rows_is_that_of_the_gathered_matrix(monkeypatch):
    rng = np.random.default_rng(2)
    items = rng.standard_normal((300, 16)).astype(np.float32)
    answers = rng.standard_normal((50, 16)).astype(np.float32)
    rows = rng.integers(0, 50, 400)
    similarity = answers[rows] @ items.T  # the one product the old code made
    old_top = np.argpartition(-similarity, kth=4, axis=1)[:, :5]
    old_weights = np.take_along_axis(similarity, old_top, axis=1)
    monkeypatch.setattr(intents, "SELECT_ROWS", 3)
    for aggregation in ("sum", "mean"):
        gathered = intents.top_items(answers, items, 5, aggregation, rows)
        whole = intents.top_items(answers[rows], items, 5, aggregation)
        assert all(np.array_equal(a, b) for a, b in zip(gathered, whole))
        assert np.array_equal(gathered[0], old_top)
        expected = old_weights / 5 if aggregation == "mean" else old_weights
        assert np.array_equal(gathered[1], expected.astype(np.float32))
        dense = intents.localise(answers, items, 5, aggregation, rows)
        assert np.array_equal(dense, intents.localise(answers[rows], items, 5, aggregation))
    assert np.array_equal(intents.localise(answers, items, 0, "sum", rows), answers[rows])
    # in blocks (a product too large for one): the same intents to float rounding
    top, weights = intents.top_items(answers[rows], items, 5, "sum")
    monkeypatch.setattr(intents, "LOCALISE_CELLS", 7 * 300)
    blocked_top, blocked_weights = intents.top_items(answers, items, 5, "sum", rows)
    assert np.allclose(np.sort(blocked_weights, axis=1), np.sort(weights, axis=1), atol=1e-5)
    assert (np.sort(blocked_top, axis=1) == np.sort(top, axis=1)).all()
    blocked = intents.localise(answers, items, 5, "sum", rows)
    assert np.allclose(blocked, (weights[:, :, None] * items[top]).sum(axis=1), atol=1e-5)


def columns_of(table, header):
    """:func:`files.read_table`'s columns in :func:`files.read_columns`' form."""
    result = {}
    for cell in header:
        name, kind = cell.split(":")
        column = table[name]
        if kind.endswith("_seq"):
            lengths = np.array([len(v) for v in column], dtype=np.int64)
            if kind == "float_seq":
                flat = np.concatenate(column) if column else np.zeros(0, np.float32)
            else:
                flat = [t for row in column for t in row]
            column = (flat, lengths)
        result[name] = column
    return result


def read_whole(path, header, block_rows):
    """read_columns' blocks joined."""
    blocks = list(files.read_columns(path, header, block_rows))
    joined = {}
    for name in blocks[0]:
        parts = [block[name] for block in blocks]
        if not isinstance(parts[0], tuple):
            joined[name] = [value for part in parts for value in part]
        elif isinstance(parts[0][0], list):
            joined[name] = (
                [t for part in parts for t in part[0]],
                [n for p in parts for n in p[1]],
            )
        else:
            joined[name] = (np.concatenate([p[0] for p in parts]), [n for p in parts for n in p[1]])
    return joined


def assert_same_columns(path, header, block_rows=3):
    old = columns_of(files.read_table(path, header), header)
    new = read_whole(path, header, block_rows)
    assert list(new) == list(old)
    for name, column in old.items():
        if isinstance(column, tuple):
            values, lengths = new[name]
            assert list(lengths) == column[1].tolist()
            if isinstance(column[0], list):
                assert values == column[0]
            else:  # bit for bit
                assert np.array_equal(values.view(np.int32), column[0].view(np.int32))
        else:
            assert new[name] == column


def test_block_reader_gives_read_tables_values(tmp_path):
    rng = np.random.default_rng(4)
    vectors = (rng.standard_normal((10, 6)) * rng.choice([1e-9, 1, 1e6], (10, 6))).astype(
        np.float32
    )
    path = str(tmp_path / "x.itemtext")
    files.write_table(path, "itemtext", zip([f"i{k}" for k in range(10)], vectors))
    assert_same_columns(path, files.HEADERS["itemtext"])
    header = files.intent_header(["long", "short"], "compact")
    rows = [
        (f"s{k}", "a b c", np.float32([0.5, 0.25, 1e-7]), "c d e", np.float32([1, 2, 3]))
        for k in range(8)
    ]
    path = str(tmp_path / "x.intent")
    files.write_table(path, header, rows)
    assert_same_columns(path, header)
    interest = [("u1", 2, vectors[0]), ("u2", 0, vectors[1])]
    path = str(tmp_path / "x.interest")
    files.write_table(path, "interest", interest)
    assert_same_columns(path, files.HEADERS["interest"])
    # files not in the writer's form: read line by line, the same values
    odd = [
        "iid:token\titem_text:float_seq\n",
        "i1\t1  2 3\n",  # two spaces
        "i2\t nan 1 2\r\n",  # leading space, nan, CRLF
        "\u00e9t\u00e9\t1 2\u00a03\n",  # non-ASCII token, a no-break space
        "i4\t\n",  # no values
        "i5\t4 5 6",  # no newline at the end
    ]
    path = str(tmp_path / "odd.itemtext")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(odd)
    for block_rows in (1, 2, 10):
        assert_same_columns(path, files.HEADERS["itemtext"], block_rows)


@pytest.mark.parametrize(
    "line",
    ["i9\t1 2\textra\n", "i9\t1 x 2\n", "\n", "i9\t0x10\n"],
    ids=["columns", "float", "blank", "hex"],
)
def test_block_reader_fails_as_read_table_does(tmp_path, line):
    path = str(tmp_path / "bad.itemtext")
    rows = [f"i{k}\t1 2 3\n" for k in range(5)]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(["iid:token\titem_text:float_seq\n", *rows[:3], line, *rows[3:]])
    with pytest.raises(files.SemanticsError) as old:
        files.read_table(path, "itemtext")
    for block_rows in (2, 100):
        with pytest.raises(files.SemanticsError) as new:
            list(files.read_columns(path, "itemtext", block_rows))
        assert str(new.value) == str(old.value)


class NamingBackend:
    """A batched LLM that names one of the items its prompt lists (or, for some prompts,
    nothing a name can be read from), derived from the prompt alone."""

    def generate(self, batch, decoding):
        from recbole_llm.semantics.backends import Generation

        replies = []
        for messages in batch:
            content = messages[-1]["content"]
            listed = re.findall(r"^\d+\. (.*)_\d+$", content, flags=re.M)
            pick = zlib.crc32(content.encode())
            replies.append(Generation("" if pick % 4 == 0 else listed[pick % len(listed)]))
        return replies


def test_llm4sbr_files_made_in_chunks_are_those_of_one_pass(tmp_path, monkeypatch):
    from synthetic import write_synthetic_sessions

    write_synthetic_sessions(str(tmp_path / "data"), n_users=40, max_len=12)
    monkeypatch.setattr(shared, "make_backend", lambda config: NamingBackend())

    def made(cache, chunk):
        monkeypatch.setattr(generator, "CHUNK_REQUESTS", chunk)
        config = Config(
            model="LLM4SBR",
            dataset="synth-session",
            config_dict={
                "data_path": str(tmp_path / "data"),
                "checkpoint_dir": str(tmp_path / "saved"),
                **SESSION_FORMAT,
                "text_fields": ["movie_title", "class"],
                "semantics_cache_dir": str(tmp_path / cache),
                "llm_backend": "openai",
                "llm_model": "naming",
                "llm_base_url": "http://127.0.0.1:9/v1",  # never asked: the backend is ours
                "llm_batch_size": 3,
                "show_progress": False,
                "state": "ERROR",
            },
        )
        manifest = json.load(open(run_pipeline(config, "llm4sbr")))
        outputs = {kind: open(files.file_path(config, kind), "rb").read() for kind in OUTPUTS}
        return outputs, manifest["counts"], manifest["generation"]["calls"]

    whole, counts, calls = made("one-pass", 1 << 16)
    samples = counts["samples"]
    # some samples share a prompt; some replies name nothing (the last item stands in)
    assert 100 < calls < 2 * samples and 0 < counts["intents_from_llm"]["long"] < samples
    for chunk in (1, 8, 13):  # batches of 3: chunks of 3, 6 and 12 requests
        assert made(f"chunks-{chunk}", chunk) == (whole, counts, calls), "new replies"
        assert made(f"chunks-{chunk}", chunk) == (whole, counts, 0), "replies from the cache"


def test_session_prompts_are_built_when_read_and_are_the_listed_ones():
    recent = {"s1": [0, 2], "s2": [1], "s3": [2, 1, 0]}
    quoted, views = ["Alpha", "Beta", "Gamma"], ["long", "short"]
    lazy = intents.SessionPrompts(list(recent), recent, quoted, views)
    listed = [
        prompts.llm4sbr_messages([(quoted[i], i) for i in recent[k]], view)
        for k in recent
        for view in views
    ]
    assert len(lazy) == 6 and list(lazy) == listed and lazy[1:5] == listed[1:5]
    assert lazy[-1] == listed[-1] and lazy[::2] == listed[::2]
    with pytest.raises(IndexError):
        lazy[6]  # noqa: B018
