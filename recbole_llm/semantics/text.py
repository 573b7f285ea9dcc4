"""Item text from configurable ``.item`` fields, with counted fallbacks for missing text.

``text_fields: [movie_title, class]`` renders "Toy Story (Animation, Children's, Comedy)": the
first field is the item's name; the others follow in parentheses, a ``token_seq`` field as a
comma-separated list. An item whose name is empty is described by the others alone
(``[brand, categories]``: "Makeup, Eyes, Mascara" for a product without a brand). An item with
no text in any field, or with no row in ``.item``, gets the fallback text "item <id>" and is
counted; it never stops the step.

Prompts quote an item's text cut to :data:`PROMPT_TEXT_MAX_CHARS` characters (a cut one ends
in "..."; they are counted, with a warning): a runaway field (a 100 KB title, a pasted
description) would otherwise fill the LLM's context with one item. The encoder reads the whole
text (it truncates to its own limit).
"""

import os
from dataclasses import dataclass, field
from logging import getLogger

#: The longest item text a prompt quotes, in characters (MovieLens texts have about 100 at most).
PROMPT_TEXT_MAX_CHARS = 300


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

    @property
    def too_long(self):
        """Items whose text is longer than a prompt quotes."""
        return [t for t, text in self.texts.items() if len(text) > PROMPT_TEXT_MAX_CHARS]

    def prompt_texts(self):
        """Each item's text as prompts quote it: cut to :data:`PROMPT_TEXT_MAX_CHARS`
        characters, warning once about the texts that were cut."""
        too_long = self.too_long
        if too_long:
            longest = max(too_long, key=lambda t: len(self.texts[t]))
            getLogger().warning(
                f"{len(too_long)} item texts are longer than {PROMPT_TEXT_MAX_CHARS} characters "
                f"(the longest, item {longest}, has {len(self.texts[longest])}); prompts quote "
                f"their first {PROMPT_TEXT_MAX_CHARS}. Check text_fields {self.fields} and the "
                ".item file."
            )
        return {token: prompt_text(text) for token, text in self.texts.items()}

    def summary(self):
        return (
            f"{len(self.texts)} items from fields {self.fields}; fallback text for "
            f"{len(self.missing_row)} without an .item row and {len(self.missing_name)} with "
            "empty text fields"
        )


def prompt_text(text):
    """``text`` as a prompt quotes it: whole, or its first :data:`PROMPT_TEXT_MAX_CHARS`
    characters (ending in "...")."""
    if len(text) <= PROMPT_TEXT_MAX_CHARS:
        return text
    return text[: PROMPT_TEXT_MAX_CHARS - 3].rstrip() + "..."


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
