"""A tiny synthetic MovieLens-like dataset for tests (MovieLens itself stays out of git).

Users have one or two favourite genres and mostly walk a fixed chain of items inside them, so
sequential models have something to learn beyond popularity. Items have titles, genres and
years; interactions have timestamps grouped into sessions (a few minutes apart inside a
session, hours between sessions), so the same data serves sequential and session tests.

    write_synthetic_dataset(root, name="synth")   # -> root/synth/synth.{inter,item}
"""

import os
import random

GENRE_WORDS = {
    "Action": ["Thunder", "Steel", "Chase", "Strike", "Fury", "Blast"],
    "Comedy": ["Pickle", "Banana", "Oops", "Giggle", "Prank", "Silly"],
    "Drama": ["Tears", "Promise", "Winter", "Letter", "River", "Silence"],
    "Sci-Fi": ["Galaxy", "Robot", "Nebula", "Quantum", "Starship", "Orbit"],
    "Horror": ["Haunted", "Shadow", "Crypt", "Scream", "Ghoul", "Cellar"],
    "Romance": ["Kiss", "Rose", "Heart", "Moonlight", "Waltz", "Sonnet"],
}

START_TIME = 1_577_836_800  # 2020-01-01


def make_items(n_items, n_genres, rng):
    """Items 1..n_items: (title, year, genres); item i's main genre is i mod n_genres."""
    genres = list(GENRE_WORDS)[:n_genres]
    items = {}
    for item in range(1, n_items + 1):
        main = genres[item % n_genres]
        words = rng.sample(GENRE_WORDS[main], 2)
        item_genres = [main]
        if rng.random() < 0.3:
            item_genres.append(rng.choice([g for g in genres if g != main]))
        items[item] = (f"{words[0]} {words[1]} {item}", 1980 + item % 40, item_genres)
    return items


def make_sequences(n_users, items, n_genres, min_len, max_len, rng):
    """Per user, a time-ordered list of (item, rating, timestamp)."""
    genres = list(GENRE_WORDS)[:n_genres]
    chains = {g: [i for i, (_, _, gs) in items.items() if gs[0] == g] for g in genres}
    popular = list(items)[: max(3, len(items) // 5)]
    sequences = {}
    for user in range(1, n_users + 1):
        favourites = rng.sample(genres, rng.choice([1, 2]))
        length = rng.randint(min_len, max_len)
        chain = chains[rng.choice(favourites)]
        position = rng.randrange(len(chain))
        clock = START_TIME + user * 86_400
        session_left = rng.randint(2, 6)
        events = []
        for _ in range(length):
            draw = rng.random()
            if draw < 0.7:
                position = (position + 1) % len(chain)
                item = chain[position]
            elif draw < 0.9:
                chain = chains[rng.choice(favourites)]
                position = rng.randrange(len(chain))
                item = chain[position]
            else:
                item = rng.choice(popular)
            events.append((item, rng.randint(3, 5), clock))
            session_left -= 1
            if session_left == 0:
                clock += rng.randint(3 * 3600, 30 * 3600)
                session_left = rng.randint(2, 6)
            else:
                clock += rng.randint(60, 300)
        sequences[user] = events
    return sequences


def write_synthetic_dataset(
    root,
    name="synth",
    n_users=60,
    n_items=48,
    n_genres=4,
    min_len=10,
    max_len=24,
    seed=0,
    blank_titles=0,
):
    """Write ``root/name/name.inter`` and ``name.item``; return the dataset folder.

    Args:
        blank_titles (int): number of items whose title and genres are left empty, to test
            missing text.
    """
    rng = random.Random(seed)
    items = make_items(n_items, n_genres, rng)
    sequences = make_sequences(n_users, items, n_genres, min_len, max_len, rng)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, events in sequences.items():
            for item, rating, timestamp in events:
                f.write(f"{user}\t{item}\t{rating}\t{timestamp}\n")
    with open(os.path.join(folder, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for item, (title, year, genres) in items.items():
            if item <= blank_titles:
                title, genres = "", []
            f.write(f"{item}\t{title}\t{year}\t{' '.join(genres)}\n")
    return folder


#: RecBole's settings for session benchmark files as our session converter writes them (the
#: session dataset YAMLs set the same for real data)
SESSION_FORMAT = {
    "USER_ID_FIELD": "session_id",
    "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
    "alias_of_item_id": ["item_id_list"],
    "benchmark_filename": ["train", "valid", "test"],
}


def write_synthetic_sessions(root, name="synth-session", source="synth", **kwargs):
    """The synthetic dataset turned into session benchmark files by our session converter."""
    from recbole_llm.data.sessions import write_session_dataset

    source_folder = write_synthetic_dataset(root, source, **kwargs)
    folder = os.path.join(root, name)
    write_session_dataset(source_folder, source, folder, name)
    return folder


#: RecBole's settings for the pre-trained entity and relation vectors of
#: :func:`write_synthetic_knowledge` (KSR reads both, GRU4RecKG the entities)
KG_VECTORS = {
    "additional_feat_suffix": ["ent", "rel"],
    "alias_of_entity_id": ["ent_id"],
    "alias_of_relation_id": ["rel_id"],
    "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
}


def write_synthetic_knowledge(root, name="synth-kg", dim=64, **kwargs):
    """The synthetic dataset with a knowledge graph: ``name.kg`` and ``name.link`` beside its
    ``.inter`` and ``.item`` files, as RecBole's knowledge-aware models read them.

    Each item is linked to its own entity, which points to an entity for each of its genres
    (``film.genre``) and one for its decade (``film.decade``); two items in a row of a genre's
    chain are ``film.sequel`` of each other, so the graph carries the signal the users follow.
    ``name.ent`` and ``name.rel`` hold a seeded random ``dim``-vector per entity and relation,
    standing in for the pre-trained KG embeddings KSR and GRU4RecKG read (:data:`KG_VECTORS`).
    """
    folder = write_synthetic_dataset(root, name, **kwargs)
    with open(os.path.join(folder, f"{name}.item"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f.readlines()[1:]]
    triples, chains = [], {}
    for item, _, year, genres in rows:
        for genre in genres.split():
            triples.append((f"e{item}", "film.genre", f"genre.{genre}"))
        if genres:
            chains.setdefault(genres.split()[0], []).append(item)
        triples.append((f"e{item}", "film.decade", f"decade.{int(year) // 10 * 10}"))
    for chain in chains.values():
        triples += [(f"e{a}", "film.sequel", f"e{b}") for a, b in zip(chain, chain[1:])]
    with open(os.path.join(folder, f"{name}.kg"), "w", encoding="utf-8") as f:
        f.write("head_id:token\trelation_id:token\ttail_id:token\n")
        f.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in triples)
    with open(os.path.join(folder, f"{name}.link"), "w", encoding="utf-8") as f:
        f.write("item_id:token\tentity_id:token\n")
        f.writelines(f"{item}\te{item}\n" for item, *_ in rows)
    rng = random.Random(len(triples))
    for suffix, names in (
        ("ent", sorted({h for h, _, _ in triples} | {t for _, _, t in triples})),
        ("rel", sorted({r for _, r, _ in triples})),
    ):
        with open(os.path.join(folder, f"{name}.{suffix}"), "w", encoding="utf-8") as f:
            f.write(f"{suffix}_id:token\t{suffix}_emb:float_seq\n")
            for entry in names:
                vector = " ".join(f"{rng.gauss(0, 0.1):.4f}" for _ in range(dim))
                f.write(f"{entry}\t{vector}\n")
    return folder
