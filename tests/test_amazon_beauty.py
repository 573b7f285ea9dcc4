"""Amazon Beauty: the S3-Rec converter, its session dataset and its prompts, on a small fixture
written at test time in the source format (the real files are never read)."""

import html
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

from recbole_llm.config import Config
from recbole_llm.data import amazon, prepare
from recbole_llm.data.sessions import read_interactions, write_sequence_session_dataset
from recbole_llm.quick_start import create_dataset
from recbole_llm.semantics import prompts
from recbole_llm.semantics.interests import interest_requests
from recbole_llm.semantics.text import item_texts

N_USERS, N_ITEMS = 40, 30
BRANDS = ["OPI", "L&#39;Oreal Paris", "Bath &amp; Body Works", "Maybelline", "Unknown", None]
PATHS = [
    ["Makeup", "Nails", "Nail Polish"],
    ["Makeup", "Eyes", "Mascara"],
    ["Skin Care", "Face", "Cleansers"],
    ["Hair Care", "Shampoos"],
    ["Bath & Body", "Cleansers", "Body Washes"],
]
# attributes P5's datamaps number but S3-Rec drops (seen fewer than 5 times): they shift the ids
RARE = {"Rare Brand": 3, "Tiny Category": 1, "Odd One": 4}


def fixture_brands_and_paths():
    """Item -> (brand or None, category path), names as the datamaps spell them."""
    items = {
        i: (BRANDS[(i - 1) % len(BRANDS)], PATHS[(i - 1) % len(PATHS)])
        for i in range(1, N_ITEMS + 1)
    }
    # a brand that shares its name with a category, and a category listed twice (both occur
    # in the real data: "Retinol", "Headbands")
    items[N_ITEMS] = ("Cleansers", ["Skin Care", "Face", "Cleansers"])
    return items


def fixture_items():
    """Item -> attribute names (brand first when it has one), as in the S3-Rec lists."""
    return {i: ([b] if b else []) + path for i, (b, path) in fixture_brands_and_paths().items()}


def fixture_sequences():
    """User -> items in time order: each user walks the items from its own start in steps of
    1 or 2 (learnable, and no two users share a first pair of items)."""
    return {
        u: [(u % N_ITEMS + (1 + u // N_ITEMS) * k) % N_ITEMS + 1 for k in range(5 + u % 6)]
        for u in range(1, N_USERS + 1)
    }


def write_beauty_source(folder):
    """Beauty.txt, Beauty_item2attributes.json and datamaps.json in the real files' format."""
    os.makedirs(folder, exist_ok=True)
    items = fixture_items()
    counts = {}
    for names in items.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    assert min(counts.values()) >= 5  # S3-Rec's filter kept only these
    # datamaps ids in order of first appearance, with the rare attributes among them
    order = []
    for names in items.values():
        for name in names:
            if name not in order:
                order.append(name)
    order[1:1] = ["Rare Brand", "Tiny Category"]
    order.insert(6, "Odd One")
    all_counts = {**counts, **RARE}
    attribute2id = {name: k for k, name in enumerate(order, 1)}
    s3rec_id = {name: k for k, name in enumerate([n for n in order if n in counts], 1)}
    with open(os.path.join(folder, "Beauty.txt"), "w", encoding="utf-8") as f:
        for user, sequence in fixture_sequences().items():
            f.write(" ".join(map(str, [user, *sequence])) + "\n")
    with open(os.path.join(folder, "Beauty_item2attributes.json"), "w", encoding="utf-8") as f:
        json.dump({str(i): [s3rec_id[n] for n in names] for i, names in items.items()}, f)
    datamaps = {
        "user2id": {f"A{u:05d}": str(u) for u in range(1, N_USERS + 1)},
        "item2id": {f"B{i:09d}": str(i) for i in items},
        "id2user": {str(u): f"A{u:05d}" for u in range(1, N_USERS + 1)},
        "id2item": {str(i): f"B{i:09d}" for i in items},
        "attribute2id": attribute2id,
        "id2attribute": {str(k): name for name, k in attribute2id.items()},
        "attributeid2num": {str(attribute2id[n]): c for n, c in all_counts.items()},
    }
    with open(os.path.join(folder, "datamaps.json"), "w", encoding="utf-8") as f:
        json.dump(datamaps, f)
    return folder


@pytest.fixture
def source(tmp_path):
    return write_beauty_source(str(tmp_path / "beauty-source"))


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        return header, [line.rstrip("\n").split("\t") for line in f]


def test_converter_counts_order_text_and_attribute_rule(source, tmp_path):
    folder = prepare.main("amazon-beauty", ["--source_dir", source, "--data_path", str(tmp_path)])
    header, items = read_rows(os.path.join(folder, "amazon-beauty.item"))
    assert header == ["item_id:token", "asin:token", "brand:token", "categories:token_seq"]
    by_id = {row[0]: row for row in items}
    assert len(items) == N_ITEMS
    assert by_id["1"] == ["1", "B000000001", "OPI", "Makeup|Nails|Nail Polish"]
    assert by_id["2"][2:] == ["L'Oreal Paris", "Makeup|Eyes|Mascara"]  # &#39; unescaped
    assert by_id["3"][2] == "Bath & Body Works"  # &amp; unescaped
    assert by_id["5"][2] == "" and by_id["6"][2:] == ["", "Makeup|Nails|Nail Polish"]  # Unknown
    assert by_id[str(N_ITEMS)][2:] == ["Cleansers", "Skin Care|Face|Cleansers"]
    assert not any("&#" in cell or "&amp;" in cell for row in items for cell in row)
    # the decoding rule: with the rare ids shifted out, every name is the fixture's own
    for item, (brand, path) in fixture_brands_and_paths().items():
        expected_brand = "" if brand in (None, "Unknown") else html.unescape(brand)
        assert by_id[str(item)][2:] == [expected_brand, "|".join(dict.fromkeys(path))]

    header, inters = read_rows(os.path.join(folder, "amazon-beauty.inter"))
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    sequences = fixture_sequences()
    assert len(inters) == sum(len(s) for s in sequences.values())
    assert len({row[0] for row in inters}) == N_USERS
    for user, sequence in sequences.items():
        rows = [row for row in inters if row[0] == str(user)]
        assert [r[1] for r in sorted(rows, key=lambda r: float(r[2]))] == list(map(str, sequence))
        assert [float(r[2]) for r in rows] == list(range(1, len(sequence) + 1))


def test_a_wrong_attribute_numbering_is_refused(source, tmp_path):
    with open(os.path.join(source, "datamaps.json"), encoding="utf-8") as f:
        datamaps = json.load(f)
    datamaps["attributeid2num"]["2"] = 50  # "Rare Brand" now passes the filter: ids shift
    with open(os.path.join(source, "datamaps.json"), "w", encoding="utf-8") as f:
        json.dump(datamaps, f)
    with pytest.raises(prepare.DatasetError, match="do not match datamaps.json"):
        amazon.write_beauty(source, str(tmp_path / "out"))


def test_missing_source_is_one_line_saying_what_is_needed(tmp_path):
    config = Config(model="Pop", dataset="amazon-beauty", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(prepare.DatasetError) as err:
        create_dataset(config)
    message = str(err.value)
    assert "source_dir is not set" in message and "CIKM2020-S3Rec" in message
    assert all(name in message for name in amazon.BEAUTY_FILES)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "Beauty.txt").write_text("1 1 2 3 4 5\n")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "dataset", "prepare_amazon-beauty.py")]
        + ["--source_dir", "partial", "--data_path", str(tmp_path / "data")],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert f"'{partial}' (source_dir) lacks Beauty_item2attributes.json, datamaps.json" in line


def test_relative_source_dir_from_the_working_directory_else_the_project_root(
    tmp_path, monkeypatch
):
    write_beauty_source(str(tmp_path / "here"))
    assert amazon.resolve_source_dir("here") == str(tmp_path / "here")
    root = tmp_path / "checkout"
    write_beauty_source(str(root / "shared"))
    monkeypatch.setattr(amazon, "project_root", lambda: str(root))
    assert amazon.resolve_source_dir("shared") == str(root / "shared")


def beauty_config(tmp_path, source, model="SASRec", dataset="amazon-beauty", **extra):
    return Config(
        model=model,
        dataset=dataset,
        config_dict={"data_path": str(tmp_path / "data"), "source_dir": source, **extra},
    )


def test_item_text_renders_brand_then_categories(source, tmp_path):
    config = beauty_config(tmp_path, source)
    prepare.ensure_dataset(config)
    texts = item_texts(config, ["1", "2", "5", "6"])
    assert texts.texts == {
        "1": "OPI (Makeup, Nails, Nail Polish)",
        "2": "L'Oreal Paris (Makeup, Eyes, Mascara)",
        "5": "Bath & Body, Cleansers, Body Washes",  # "Unknown" is no brand
        "6": "Makeup, Nails, Nail Polish",
    }
    assert texts.fallback_count == 0


ML_100K_TASK = (
    "A user watched these movies, oldest first:\n1. Toy Story (Animation, Children's, Comedy)\n"
    "2. GoldenEye (Action, Adventure, Thriller)\n"
    "List 3 to 5 distinct interests of this user as a JSON array of short phrases."
)
ML_100K_EXAMPLE = (
    "A user watched these movies, oldest first:\n1. Sense and Sensibility (Drama, Romance)\n"
    "2. Emma (Comedy, Drama, Romance)\n3. Persuasion (Romance)\n4. Little Women (Drama)\n"
    "List 3 to 5 distinct interests of this user as a JSON array of short phrases."
)


def test_movie_prompts_are_unchanged():
    """MovieLens prompts are byte-identical to before products had their own example: the
    shipped reply caches are keyed by them."""
    config = Config(model="EIMF", dataset="ml-100k")
    texts = {
        "1": "Toy Story (Animation, Children's, Comedy)",
        "2": "GoldenEye (Action, Adventure, Thriller)",
    }
    (messages,) = interest_requests(config, ["u"], {"u": ["1", "2"]}, texts)
    assert messages == [
        {
            "role": "system",
            "content": "You describe what a person likes. "
            "Answer only with a JSON array of short phrases.",
        },
        {"role": "user", "content": ML_100K_EXAMPLE},
        {
            "role": "assistant",
            "content": '["period romance", "literary adaptations", "costume drama"]',
        },
        {"role": "user", "content": ML_100K_TASK},
    ]
    assert prompts.template_hash("eimf", config["item_noun"]) == "7d2092e6996e9841"
    assert prompts.template_hash("eimf") == prompts.template_hash("eimf", "item")
    assert prompts.template_hash("llm4sbr") == "5b52756f18cb5d61"


def test_product_prompts_never_say_movie(source, tmp_path):
    config = beauty_config(tmp_path, source, model="EIMF")
    prepare.ensure_dataset(config)
    texts = item_texts(config, ["1", "2", "6"]).texts
    (messages,) = interest_requests(config, ["u"], {"u": ["1", "2", "6"]}, texts)
    sessions = prompts.llm4sbr_messages([(texts[i], i) for i in ("1", "6")], "long")
    for message in messages + sessions:
        assert "movie" not in message["content"].lower()
        assert "watch" not in message["content"].lower()
    assert messages[1]["content"].startswith("A user bought these products, oldest first:")
    assert messages[-1]["content"].splitlines()[1:4] == [
        "1. OPI (Makeup, Nails, Nail Polish)",
        "2. L'Oreal Paris (Makeup, Eyes, Mascara)",
        "3. Makeup, Nails, Nail Polish",
    ]
    assert prompts.template_hash("eimf", "product") != prompts.template_hash("eimf", "movie")


def test_session_dataset_one_session_per_user_prefixes_split_by_user(source, tmp_path):
    root = str(tmp_path / "data")
    folder = prepare.main("amazon-beauty-session", ["--source_dir", source, "--data_path", root])
    sequences = {str(u): list(map(str, s)) for u, s in fixture_sequences().items()}
    users_of = {}
    samples = []
    for part in ("train", "valid", "test"):
        header, rows = read_rows(os.path.join(folder, f"amazon-beauty-session.{part}.inter"))
        assert header[:3] == ["session_id:token", "item_id_list:token_seq", "item_id:token"]
        for _, items, target, position in rows:
            prefix = items.split("|")
            # which user: the one whose sequence starts with this prefix at this position
            (user,) = [
                u
                for u, s in sequences.items()
                if s[: len(prefix)] == prefix and s[len(prefix)] == target
            ]
            assert int(float(position)) == len(prefix) + 1
            users_of.setdefault(user, set()).add(part)
            samples.append((user, len(prefix)))
    # every prefix of every user, each exactly once (the fixture is far below the subset size)
    assert sorted(samples) == sorted((u, k) for u, s in sequences.items() for k in range(1, len(s)))
    assert all(len(parts) == 1 for parts in users_of.values())  # split by session
    assert {p for parts in users_of.values() for p in parts} == {"train", "valid", "test"}
    # RecBole reads the |-joined lists back
    config = Config(
        model="GRU4Rec",
        dataset="amazon-beauty-session",
        config_dict={"data_path": root, "state": "ERROR"},
    )
    dataset = create_dataset(config)
    assert dataset.inter_num == len(samples)
    assert int(dataset.inter_feat[dataset.item_list_length_field].max()) == max(
        len(s) - 1 for s in sequences.values()
    )


def test_session_subset_is_fixed_and_drawn_before_the_split(source, tmp_path):
    source_folder = str(tmp_path / "amazon-beauty")
    amazon.write_beauty(source, source_folder)
    n_samples = len(read_interactions(os.path.join(source_folder, "amazon-beauty.inter")))
    n_samples -= N_USERS

    def build(name, max_samples):
        folder = str(tmp_path / name)
        stats = write_sequence_session_dataset(
            source_folder, "amazon-beauty", folder, name, max_samples=max_samples, seq_separator="|"
        )
        rows = []
        for part in ("train", "valid", "test"):
            rows += [tuple(r[1:]) for r in read_rows(f"{folder}/{name}.{part}.inter")[1]]
        return stats, rows

    full_stats, full = build("full", None)
    stats, subset = build("sub", 60)
    assert full_stats["samples"] == n_samples and stats["subset_of"] == n_samples
    assert stats["samples"] == len(subset) == 60 and set(subset) <= set(full)
    assert build("again", 60)[1] == subset
    assert prepare.SEQUENCE_SESSION_DATASETS["amazon-beauty-session"] == (
        "amazon-beauty",
        prepare.BEAUTY_SESSION_SAMPLES,
    )


def test_sasrec_trains_on_the_converted_fixture(source, fast_config, tmp_path):
    from recbole_llm.quick_start import run_recbole_llm

    config = dict(fast_config, data_path=str(tmp_path / "data"), source_dir=source)
    del config["load_col"]  # the dataset YAML's: user, item, timestamp
    result = run_recbole_llm(model="SASRec", dataset="amazon-beauty", config_dict=config)
    ndcg = result["test_result"]["ndcg@10"]
    assert math.isfinite(ndcg) and ndcg > 0
    assert os.path.isfile(tmp_path / "data" / "amazon-beauty" / "amazon-beauty.inter")
