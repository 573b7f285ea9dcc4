"""Amazon Beauty (5-core) from the S3-Rec preprocessing, converted to RecBole atomic files.

The source is three files in one folder (``source_dir``), which recbole_llm never ships:

- ``Beauty.txt`` (aHuiWang/CIKM2020-S3Rec, ``data/``): one line per user, ``user item item ...``,
  items in time order, no timestamps;
- ``Beauty_item2attributes.json`` (same repository): ``{item: [attribute id, ...]}``;
- ``datamaps.json`` (Wenyueh/LLM-RecSys-ID, ``data/beauty/``, P5's): each item's ASIN and the
  attribute names, numbered before S3-Rec's frequency filter.

Three rules decode them (measured on the real files, checked at every conversion):

1. **Attribute names.** S3-Rec keeps the attributes seen at least 5 times and numbers them
   anew: its id ``s`` is the ``s``-th datamaps attribute id, in increasing order, among those
   whose ``attributeid2num`` is at least 5. Under this rule every S3-Rec id occurs exactly as
   often as the datamaps say; a conversion whose files break that fails.
2. **Brand or category.** An item's list is its brand, when it has one, then its category path,
   which starts at a top-level category. The top-level categories are the attributes listed
   second after an attribute that is never listed anywhere but first (an unambiguous brand); a
   list whose second attribute is top-level starts with a brand, any other list has none. On
   Beauty: 6 top-level categories (Skin Care, Hair Care, Makeup, Tools & Accessories, Bath &
   Body, Fragrance); 7,496 lists start with a brand, including four whose brand shares its
   name with a category ("Retinol", "Scissors", "Skin Care" twice). The metadata's
   placeholders, an empty brand (18 items) and "Unknown" (20), count as no brand, which leaves
   7,458 items with a brand and 4,643 without. A category repeated in one list is kept once.
3. **Text.** Names carry HTML entities (``L&#39;Oreal Paris``); they are unescaped.

Output, in ``<folder>/``:

- ``<name>.item``: ``item_id:token asin:token brand:token categories:token_seq``, categories
  joined by ``|`` (names contain spaces, "Nail Polish"; none contains ``|``), so the dataset YAML
  sets ``seq_separator: "|"``;
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float``, S3-Rec's user and item ids;
  the timestamp is the item's position in its user's sequence (1, 2, ...), since the source is
  ordered but not timed, so RecBole's time order is the source order.
"""

import html
import json
import os

from recbole_llm.data.atomic import DatasetError, write_atomic_file

BEAUTY_FILES = ("Beauty.txt", "Beauty_item2attributes.json", "datamaps.json")
BEAUTY_ORIGIN = (
    "Beauty.txt and Beauty_item2attributes.json from github.com/aHuiWang/CIKM2020-S3Rec "
    "(data/), datamaps.json from github.com/Wenyueh/LLM-RecSys-ID (data/beauty/)"
)
#: S3-Rec's frequency filter on attributes (rule 1)
MIN_ATTRIBUTE_COUNT = 5
#: brand names of the metadata that say there is none (rule 2), compared in lower case
PLACEHOLDER_BRANDS = {"", "unknown"}
SEQ_SEPARATOR = "|"


def project_root():
    """The checkout's root (the folder above the package); a relative ``source_dir`` is
    looked up there when the working directory does not hold it."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_source_dir(source_dir, name="amazon-beauty"):
    """The folder holding the source files, checked: an absolute path, or a relative one taken
    from the working directory when it is there, else from the project root (so suite files can
    say ``../shared/data/amazon-beauty`` whatever folder a run starts in).

    Raises:
        DatasetError: ``source_dir`` is unset, or a needed file is missing, in one line saying
            which files are needed and where they come from.
    """
    needed = f"{', '.join(BEAUTY_FILES)} ({BEAUTY_ORIGIN})"
    if not source_dir:
        raise DatasetError(
            f"Dataset '{name}' is built from the S3-Rec Beauty files, and source_dir is not set: "
            f"set source_dir (--source_dir=DIR or in a config file) to a folder holding {needed}."
        )
    candidates = [os.path.abspath(source_dir)]
    if not os.path.isabs(source_dir):
        candidates.append(os.path.join(project_root(), source_dir))
    folder = next((c for c in candidates if os.path.isdir(c)), None)
    if folder is None:
        tried = " nor ".join(f"'{c}'" for c in dict.fromkeys(candidates))
        raise DatasetError(
            f"Dataset '{name}' needs {needed}; source_dir '{source_dir}' is no folder: neither "
            f"{tried} exists."
        )
    missing = [f for f in BEAUTY_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DatasetError(
            f"Dataset '{name}' needs {needed}; '{folder}' (source_dir) lacks "
            f"{', '.join(missing)}."
        )
    return folder


def read_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DatasetError(f"'{path}' is not JSON ({err}); fetch the file again.") from err


def read_sequences(path):
    """``{user: [item, ...]}`` of an S3-Rec sequence file, in file order."""
    sequences = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[0] in sequences:
                raise DatasetError(
                    f"'{path}' line {number} is not 'user item item ...' with a new user."
                )
            sequences[fields[0]] = fields[1:]
    return sequences


def attribute_names(item_attributes, datamaps, path):
    """S3-Rec attribute id -> name (rule 1), checked against the datamaps' counts."""
    counts = {int(a): n for a, n in datamaps["attributeid2num"].items()}
    kept = sorted(a for a, n in counts.items() if n >= MIN_ATTRIBUTE_COUNT)
    seen = {}
    for attributes in item_attributes.values():
        for s in attributes:
            seen[s] = seen.get(s, 0) + 1
    wrong = [s for s, n in seen.items() if not 1 <= s <= len(kept) or counts[kept[s - 1]] != n]
    if wrong:
        raise DatasetError(
            f"The attribute ids of '{path}' do not match datamaps.json ({len(wrong)} of "
            f"{len(seen)} differ, e.g. {sorted(wrong)[0]}): the files are not the S3-Rec and "
            "P5 Beauty files this converter decodes."
        )
    id2attribute = datamaps["id2attribute"]
    return {s: html.unescape(id2attribute[str(kept[s - 1])]).strip() for s in seen}


def split_brands(item_attributes):
    """``{item: (brand or "", [category, ...])}`` from S3-Rec attribute lists (rule 2)."""
    later = {s for attributes in item_attributes.values() for s in attributes[1:]}
    top_level = {
        attributes[1]
        for attributes in item_attributes.values()
        if len(attributes) > 1 and attributes[0] not in later
    }
    result = {}
    for item, attributes in item_attributes.items():
        if len(attributes) > 1 and attributes[1] in top_level:
            brand, categories = attributes[0], attributes[1:]
        else:
            brand, categories = None, attributes
        result[item] = (brand, list(dict.fromkeys(categories)))
    return result


def write_beauty(source_dir, folder, name="amazon-beauty"):
    """Convert the S3-Rec Beauty files in ``source_dir`` into ``folder/<name>.item`` and
    ``.inter`` (the ``.inter`` last, so that its presence means the dataset is complete);
    returns counts."""
    source = resolve_source_dir(source_dir, name)
    sequences = read_sequences(os.path.join(source, "Beauty.txt"))
    attributes_path = os.path.join(source, "Beauty_item2attributes.json")
    item_attributes = {
        str(item): [int(s) for s in attributes]
        for item, attributes in read_json(attributes_path).items()
    }
    datamaps = read_json(os.path.join(source, "datamaps.json"))
    names = attribute_names(item_attributes, datamaps, attributes_path)
    parts = split_brands(item_attributes)
    asins = datamaps["id2item"]
    items = sorted({i for seq in sequences.values() for i in seq} | set(item_attributes), key=int)
    unknown = [i for i in items if i not in asins]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} item ids (e.g. {unknown[0]}) have no ASIN in datamaps.json: the "
            "files do not belong together."
        )

    def item_row(item):
        brand, categories = parts.get(item, (None, []))
        brand = names[brand] if brand is not None else ""
        if brand.lower() in PLACEHOLDER_BRANDS:
            brand = ""
        return (item, asins[item], brand, SEQ_SEPARATOR.join(names[s] for s in categories))

    rows = [item_row(i) for i in items]
    write_atomic_file(
        os.path.join(folder, f"{name}.item"),
        ["item_id:token", "asin:token", "brand:token", "categories:token_seq"],
        rows,
    )
    write_atomic_file(
        os.path.join(folder, f"{name}.inter"),
        ["user_id:token", "item_id:token", "timestamp:float"],
        (
            (user, item, str(position))
            for user, sequence in sequences.items()
            for position, item in enumerate(sequence, 1)
        ),
    )
    return {
        "users": len(sequences),
        "items": len(items),
        "interactions": sum(len(s) for s in sequences.values()),
        "items_with_brand": sum(1 for row in rows if row[2]),
    }
