"""Item text from configurable ``.item`` fields, with counted fallbacks for missing text.

``text_fields: [movie_title, class]`` renders "Toy Story (Animation, Children's, Comedy)": the
first field is the item's name; the others follow in parentheses, a ``token_seq`` field as a
comma-separated list. An item whose name is empty is described by the others alone
(``[brand, categories]``: "Makeup, Eyes, Mascara" for a product without a brand). An item with
no text in any field, or with no row in ``.item``, gets the fallback text "item <id>" and is
counted; it never stops the step.
"""

import os
from dataclasses import dataclass, field


@dataclass
class ItemTexts:
    """Text of every item of a dataset, keyed by the raw item token."""

    texts: dict
    fields: list
    missing_row: list = field(default_factory=list)  # items with no row in .item
    missing_name: list = field(default_factory=list)  # items whose text fields are all empty

    @property
    def fallback_count(self):
        return len(self.missing_row) + len(self.missing_name)

    def summary(self):
        return (
            f"{len(self.texts)} items from fields {self.fields}; fallback text for "
            f"{len(self.missing_row)} without an .item row and {len(self.missing_name)} with "
            "empty text fields"
        )


def fallback_text(item_token):
    return f"item {item_token}"


def read_item_file(path, field_separator="\t", encoding="utf-8"):
    """Read an atomic ``.item`` file as strings; returns ``(rows, field types)``."""
    import pandas as pd

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Item text comes from '{path}', which does not exist. The semantic step needs the "
            "dataset's .item file with the fields named in text_fields."
        )
    frame = pd.read_csv(
        path, sep=field_separator, dtype=str, keep_default_na=False, encoding=encoding
    )
    types = {}
    for column in frame.columns:
        name, _, kind = column.partition(":")
        types[name] = kind or "token"
    frame.columns = list(types)
    return frame, types


def render(values, fields, types, seq_separator=" "):
    """One item's text from its field values: the first field is the name, the others follow
    in parentheses, or stand alone when the name is empty."""
    name = values[fields[0]].strip()
    details = []
    for name_field in fields[1:]:
        value = values[name_field].strip()
        if not value:
            continue
        if types[name_field].endswith("_seq"):
            value = ", ".join(v for v in value.split(seq_separator) if v)
        details.append(value)
    if not name:
        return "; ".join(details)
    return f"{name} ({'; '.join(details)})" if details else name


def item_texts(config, item_tokens):
    """Text for each raw item token in ``item_tokens`` from the dataset's ``.item`` file."""
    fields = list(config["text_fields"] or [])
    if not fields:
        raise ValueError(
            "text_fields is empty: name the .item fields that make an item's text, e.g. "
            "text_fields: [movie_title, class]."
        )
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    frame, types = read_item_file(path, config["field_separator"], config["encoding"] or "utf-8")
    id_field = config["ITEM_ID_FIELD"]
    unknown = [f for f in [id_field, *fields] if f not in types]
    if unknown:
        raise ValueError(
            f"text_fields names {unknown}, which '{path}' does not have; its fields are "
            f"{list(types)}."
        )
    rows = {row[id_field]: row for row in frame[[id_field, *fields]].to_dict("records")}
    result = ItemTexts(texts={}, fields=fields)
    for token in item_tokens:
        row = rows.get(token)
        if row is None:
            result.missing_row.append(token)
            result.texts[token] = fallback_text(token)
            continue
        text = render(row, fields, types, config["seq_separator"])
        if not text:
            result.missing_name.append(token)
            text = fallback_text(token)
        result.texts[token] = text
    return result


def category_words(config, item_tokens):
    """The category tokens (``category_field``, e.g. genres) of each item, for LLM-free
    interests; empty lists when the dataset names no category field."""
    category = config["category_field"]
    if not category:
        return {token: [] for token in item_tokens}
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    frame, types = read_item_file(path, config["field_separator"], config["encoding"] or "utf-8")
    if category not in types:
        raise ValueError(f"category_field '{category}' is not a field of '{path}'.")
    id_field = config["ITEM_ID_FIELD"]
    words = {
        row[id_field]: [w for w in row[category].split(config["seq_separator"]) if w]
        for row in frame[[id_field, category]].to_dict("records")
    }
    return {token: words.get(token, []) for token in item_tokens}
