"""Pieces of the semantic step: parsing, text, caches, clustering, localisation, the encoder."""

import hashlib
import json
import os

import numpy as np
import pytest

from recbole_llm.semantics.cache import ReplyCache, request_key, request_keys
from recbole_llm.semantics.embedding_cache import EmbeddingCache
from recbole_llm.semantics.intents import localise
from recbole_llm.semantics.parsing import parse_interests, parse_item_name
from recbole_llm.semantics.text import render
from recbole_llm.semantics.typical import select_typical_users


@pytest.mark.parametrize(
    "reply, expected",
    [
        (
            '["space opera", "sci-fi action films", "thriller movies"]',
            ["space opera", "sci-fi action films", "thriller movies"],
        ),
        ('```json\n["Film Noir", "film noir", "comedy, comedy"]\n```', ["Film Noir", "comedy"]),
        ('{"1": "romance", "2": "drama"}', ["romance", "drama"]),
        ('["period romance", "literary adapt', ["period romance", "literary adapt"]),  # cut off
        (
            "1. Science fiction\n2. Horror movies\n3) Animation",
            ["Science fiction", "Horror movies", "Animation"],
        ),
        ("- action\n* adventure\n\u2022 war", ["action", "adventure", "war"]),
        ("Interests: comedy, drama; romance.", ["comedy", "drama", "romance"]),
        ("The user's interests are:", []),
        ("", []),
    ],
)
def test_parse_interests_from_messy_replies(reply, expected):
    assert parse_interests(reply, max_interests=5) == expected


def test_replies_that_repeat_the_worked_example_are_recognised():
    from recbole_llm.semantics.prompts import echoes_example

    # Amazon Beauty: SmolLM2-135M copied the product example's answer for half its typical users
    assert echoes_example(["facial skin care", "eye makeup"], "product")
    assert echoes_example(["Lip Color"], "product")
    assert not echoes_example(["facial skin care", "hair care"], "product")
    assert echoes_example(["period romance"], "movie") and not echoes_example([], "movie")
    assert echoes_example(["costume drama"], "song")  # other nouns are shown the movie example


def test_parse_interests_caps_and_drops_echoes_and_prose():
    reply = '["Toy Story", "animation", "a very long sentence that goes on and on about nothing", "b", "c", "d", "e"]'
    assert parse_interests(reply, 3, echoes=["toy story"]) == ["animation", "b", "c"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Star Wars_50", "Star Wars"),
        (
            '"Toy Story (Animation, Comedy)"\nBecause the user likes...',
            "Toy Story (Animation, Comedy)",
        ),
        ("Item name: Fargo", "Fargo"),
        ('The user is interested in the item named "The (Drama, Horror', "The (Drama, Horror"),
        ("The item is Star Wars (Action, Sci-Fi)_50", "Star Wars (Action, Sci-Fi)"),
        ("I would guess Alien", "Alien"),
        ('"Toy Story"_1 is likely', "Toy Story"),
        ("1. Alien", "Alien"),
        ("", ""),
    ],
)
def test_parse_item_name(reply, expected):
    assert parse_item_name(reply) == expected


def test_render_item_text():
    types = {"title": "token_seq", "year": "token", "genre": "token_seq"}
    row = {"title": "Toy Story", "year": "1995", "genre": "Animation Children's Comedy"}
    assert (
        render(row, ["title", "year", "genre"], types)
        == "Toy Story (1995; Animation, Children's, Comedy)"
    )
    assert render(dict(row, genre=""), ["title", "genre"], types) == "Toy Story"
    # no name: the other fields alone; nothing at all: empty (the caller's fallback text)
    assert render(dict(row, title=""), ["title", "genre"], types) == "Animation, Children's, Comedy"
    assert render(dict(row, title="", genre=""), ["title", "genre"], types) == ""


def test_reply_cache_survives_a_torn_write(tmp_path):
    path = str(tmp_path / "replies.jsonl")
    cache = ReplyCache(path)
    key = request_key("m", [{"role": "user", "content": "hi"}], {"max_new_tokens": 4})
    cache.put_many([{"key": key, "text": "hello"}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "torn", "te')  # a kill -9 in the middle of a write
    reopened = ReplyCache(path)
    assert reopened.get(key)["text"] == "hello" and "torn" not in reopened
    reopened.put_many([{"key": "k2", "text": "x"}])
    assert len(ReplyCache(path)) == 2
    # the key covers model, messages and decoding, not the backend
    assert key != request_key("m", [{"role": "user", "content": "hi"}], {"max_new_tokens": 5})
    assert key != request_key("m2", [{"role": "user", "content": "hi"}], {"max_new_tokens": 4})


def test_request_keys_are_each_requests_request_key():
    requests = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": 'é " \n'}, {"role": "user", "content": "Ω"}],
    ]
    for model, decoding in [("m", {"max_new_tokens": 4, "do_sample": False}), ("", {})]:
        assert request_keys(model, requests, decoding) == [
            request_key(model, messages, decoding) for messages in requests
        ]
        # the key format, written out once here: json.dumps of the three, keys sorted
        for messages, key in zip(requests, request_keys(model, requests, decoding)):
            payload = {"model": model, "messages": messages, "decoding": decoding}
            text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
            assert key == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_embedding_cache_survives_a_torn_write(tmp_path):
    cache = EmbeddingCache(str(tmp_path / "emb"), dim=3)
    cache.add(["a", "b"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    with open(cache.vectors_path, "ab") as f:
        f.write(b"\x00" * 7)  # half a row, no key: an interrupted append
    reopened = EmbeddingCache(str(tmp_path / "emb"), dim=3)
    vectors, found = reopened.lookup(["b", "c", "a"])
    assert found.tolist() == [True, False, True]
    assert vectors[0].tolist() == [4, 5, 6] and vectors[2].tolist() == [1, 2, 3]
    reopened.add(["c"], np.ones((1, 3), dtype=np.float32))
    assert EmbeddingCache(str(tmp_path / "emb"), dim=3).lookup(["c"])[0][0].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="3-d vectors"):
        EmbeddingCache(str(tmp_path / "emb"), dim=4)


def _clustered_users(n_per_cluster=40, clusters=5, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    vectors = np.concatenate([c + rng.normal(size=(n_per_cluster, dim)) * 0.3 for c in centres])
    return [f"u{i}" for i in range(len(vectors))], vectors


@pytest.mark.parametrize("method", ["ap", "kmeans"])
def test_typical_users_hit_the_target_share(method):
    users, vectors = _clustered_users()
    typical = select_typical_users(users, vectors, method=method, typical_ratio=0.05)
    assert abs(len(typical.exemplars) - 10) <= 1
    mapping = typical.mapping()
    assert set(mapping) == set(users)
    assert set(mapping.values()) == set(typical.typical_tokens)
    # a typical user is its own typical user
    assert all(mapping[t] == t for t in typical.typical_tokens)


def test_affinity_propagation_on_a_sample_past_ap_max_users():
    users, vectors = _clustered_users(n_per_cluster=60)
    typical = select_typical_users(
        users, vectors, method="ap", typical_ratio=0.05, max_ap_users=100
    )
    assert typical.details["ap_sample"] == 100
    assert len(set(typical.mapping())) == 300
    # the share is of all 300 users (15), not of the 100 sampled (5)
    assert typical.details["target_clusters"] == 15
    assert 13 <= len(typical.exemplars) <= 17


def test_localisation_weights_the_top_r_items():
    items = np.eye(4, dtype=np.float32)
    answer = np.array([[0.9, 0.4, 0.1, 0.0]], dtype=np.float32)
    assert np.allclose(localise(answer, items, 2, "sum"), [[0.9, 0.4, 0, 0]])
    assert np.allclose(localise(answer, items, 2, "mean"), [[0.45, 0.2, 0, 0]])
    assert np.allclose(localise(answer, items, 0, "sum"), answer)


def test_real_minilm_encoder_is_cached_and_meaningful(tmp_path):
    from recbole_llm.semantics.encoder import TextEncoder

    encoder = TextEncoder(cache_dir=str(tmp_path), progress=False)
    texts = [
        "a science fiction movie about space",
        "a sci-fi film set in outer space",
        "a romantic comedy about a wedding",
    ]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and encoder.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.4  # measured: 0.81 vs 0.29
    again = TextEncoder(cache_dir=str(tmp_path), progress=False)
    assert np.allclose(again.encode(texts[::-1]), vectors[::-1])
    assert again.encoded == 0, "the second encoder reads every vector from the cache"
    folder = os.path.dirname(again.cache.vectors_path)
    assert json.load(open(os.path.join(folder, "meta.json")))["dim"] == 384
