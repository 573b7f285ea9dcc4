"""LLM4SBR's semantic step: each sample's long- and short-term intents.

Per sample, a long-term and a short-term prompt over the last ``prompt_max_items`` items before
its target -> guessed item names -> encoded -> localised onto the ``intent_topr`` most similar
real items (similarity-weighted sum or mean) -> ``.itemtext``, ``.intent`` (each intent as its
top-r item ids and weights, or with ``intent_form: dense`` the vector itself).
"""

import collections
import collections.abc
import time

import numpy as np

from recbole_llm.semantics import files, prompts, shared
from recbole_llm.semantics.history import sample_prefixes
from recbole_llm.semantics.parsing import parse_item_name

#: Similarities (answers x items) computed in one product, 512 MB of float32; a larger one is
#: computed in blocks of answers. Every dataset we ship fits in one block (amazon-beauty-session:
#: 10,000 x 12,101), so their files are what they were; a product computed in blocks is
#: deterministic, but BLAS rounds a row differently in another block shape, so a few weights
#: may differ in their last written digit from one computed at once.
LOCALISE_CELLS = 2**27
#: Rows whose top items are chosen at once (argpartition's int64 indices of every item)
SELECT_ROWS = 256


def _blocks(n_rows, row_cells):
    """``(start, stop)`` of consecutive blocks of rows, each of at most ``LOCALISE_CELLS``."""
    step = max(1, LOCALISE_CELLS // max(1, row_cells))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def top_items(answer_vectors, item_vectors, topr, aggregation, rows=None):
    """Intent localisation in compact form: for each answer, the rows of the ``topr`` items
    most similar to it ``[n, r]`` and their weights ``[n, r]`` (the similarity, divided by
    ``topr`` for ``aggregation: mean``); the intent is the weighted sum of those items' vectors
    (:func:`localise`). ``rows`` given: the answers are ``answer_vectors[rows]``, gathered a
    block at a time (a distinct answer is encoded once, however many samples gave it)."""
    if aggregation not in ("sum", "mean"):
        raise ValueError(f"intent_aggregation must be 'sum' or 'mean', got '{aggregation}'")
    n = len(answer_vectors) if rows is None else len(rows)
    width = min(topr, len(item_vectors))
    if rows is not None and n * len(item_vectors) > LOCALISE_CELLS:
        # past one block, each distinct answer is localised once and gathered: the cost grows
        # with the distinct answers (at most the items named), not with the samples
        distinct, inverse = np.unique(rows, return_inverse=True)
        top, weights = top_items(answer_vectors[distinct], item_vectors, topr, aggregation)
        return top[inverse], weights[inverse]
    top = np.empty((n, width), dtype=np.int64)
    weights = np.empty((n, width), dtype=np.float32)
    for start, stop in _blocks(n, len(item_vectors)):
        block = answer_vectors[start:stop] if rows is None else answer_vectors[rows[start:stop]]
        similarity = block @ item_vectors.T  # one product per block: its rows' exact values
        for low in range(0, stop - start, SELECT_ROWS):  # each row's choice is its own
            rows_similarity = similarity[low : low + SELECT_ROWS]
            chosen = np.argpartition(-rows_similarity, kth=width - 1, axis=1)[:, :width]
            weight = np.take_along_axis(rows_similarity, chosen, axis=1)
            if aggregation == "mean":
                weight = weight / topr
            at = slice(start + low, start + low + len(chosen))
            top[at], weights[at] = chosen, weight
    return top, weights


def localise(answer_vectors, item_vectors, topr, aggregation, rows=None):
    """Intent localisation: the similarity-weighted sum (or mean) of the ``topr`` items most
    similar to each answer; ``topr = 0`` keeps the encoded answer itself. ``rows`` as in
    :func:`top_items`."""
    if topr == 0:
        vectors = answer_vectors if rows is None else answer_vectors[rows]
        return vectors.astype(np.float32)
    top, weights = top_items(answer_vectors, item_vectors, topr, aggregation, rows)
    result = np.empty((len(top), item_vectors.shape[1]), dtype=np.float32)
    for start, stop in _blocks(len(top), top.shape[1] * item_vectors.shape[1]):
        part = weights[start:stop, :, None] * item_vectors[top[start:stop]]
        result[start:stop] = part.sum(axis=1)
    return result


def _form(config, tokens):
    """``intent_form``: compact writes each intent as its top-r item ids and weights (the
    dataset rebuilds the vector from ``.itemtext``), dense the vector itself."""
    form = config["intent_form"]
    if form not in files.INTENT_FORMS:
        raise files.SemanticsError(
            f"intent_form must be one of {list(files.INTENT_FORMS)}, got '{form}'."
        )
    if form == "compact" and config["intent_topr"] == 0:
        raise files.SemanticsError(
            "intent_topr: 0 keeps each raw answer's vector, which has no compact form; "
            "set intent_form: dense."
        )
    spaced = next((t for t in tokens if any(c.isspace() for c in t)), None)
    if form == "compact" and spaced is not None:
        raise files.SemanticsError(
            f"Item id '{spaced}' contains whitespace, which a compact intent file (token_seq) "
            "cannot hold; set intent_form: dense."
        )
    return form


def _cells(intents, views, j, tokens):
    """Sample ``j``'s cells of ``.intent``: per view, the vector (dense) or the item tokens and
    weights (compact)."""
    for view in views:
        parts = intents[view]
        if len(parts) == 1:
            yield parts[0][j]
        else:
            yield " ".join(tokens[i] for i in parts[0][j])
            yield parts[1][j]


class SessionPrompts(collections.abc.Sequence):
    """The step's requests, built when read: request ``j * len(views) + v`` is sample ``j``'s
    prompt for view ``v`` over its ``recent`` items (so the generator holds one chunk's
    prompts at a time, never all of them); the same messages as
    :func:`~recbole_llm.semantics.prompts.llm4sbr_messages`, with each item's label made once
    and each sample's listing once for all its views."""

    def __init__(self, keys, recent, quoted, views):
        self.keys, self.recent, self.quoted, self.views = keys, recent, quoted, views
        self.labels = {}  # an item's ``Name_ID``, made the first time a prompt lists it

    def __len__(self):
        return len(self.keys) * len(self.views)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._prompts(start, stop)
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self._prompts(index, index + 1)[0]

    def _prompts(self, start, stop):
        width, labels, built = len(self.views), self.labels, []
        for sample in range(start // width, -(-stop // width)):
            listing = prompts.llm4sbr_listing(
                labels[t] if t in labels else self._label(t) for t in self.recent[self.keys[sample]]
            )
            for view in range(max(start - sample * width, 0), min(stop - sample * width, width)):
                built.append(prompts.llm4sbr_view_messages(listing, self.views[view]))
        return built

    def _label(self, token):
        label = self.labels[token] = f"{self.quoted[token]}_{token}"
        return label


class Answers:
    """What the step keeps of the replies, a chunk at a time (:meth:`add`): per view, each
    sample's answered item name as a number (-1: none) and the distinct names in the order
    samples first give them, and the failed requests."""

    def __init__(self, samples, views):
        self.width = len(views)
        self.name_rows = [np.full(samples, -1, dtype=np.int64) for _ in views]
        self.names = [{} for _ in views]  # name -> its number
        self.failed = [0] * len(views)

    def add(self, start, replies):
        """Parse a chunk of replies (requests ``start``, ``start + 1``, ...); a text repeated
        within the chunk is parsed once."""
        parsed = {}
        for index, reply in enumerate(replies, start):
            sample, view = divmod(index, self.width)
            if reply.error:
                self.failed[view] += 1
                continue
            name = parsed.get(reply.text)
            if name is None:
                name = parsed[reply.text] = parse_item_name(reply.text)
            if name:
                numbers = self.names[view]
                self.name_rows[view][sample] = numbers.setdefault(name, len(numbers))

    def of(self, view):
        """``(samples with an answer, distinct names)`` of ``view``."""
        return np.flatnonzero(self.name_rows[view] >= 0), list(self.names[view])


def _intent_views(config):
    views = list(config["intent_views"] or [])
    if (
        not views
        or any(v not in prompts.LLM4SBR_VIEWS for v in views)
        or len(set(views)) < len(views)
    ):
        raise ValueError(
            f"intent_views must be distinct views from {list(prompts.LLM4SBR_VIEWS)}, got {views}"
        )
    return views


def run_llm4sbr(config, make_dataset, refresh, start):
    """LLM4SBR's step on the dataset ``make_dataset()`` builds; returns the manifest path."""
    if not config["benchmark_filename"]:
        raise ValueError(
            "LLM4SBR semantics are made per sample of a session dataset in RecBole's benchmark "
            "form (benchmark_filename: [train, valid, test]); "
            f"dataset '{config['dataset']}' has no benchmark_filename."
        )
    views = _intent_views(config)
    source = config["intent_source"]
    if source not in ("llm", "last_item"):
        raise ValueError(f"intent_source must be 'llm' or 'last_item', got '{source}'")
    dataset = make_dataset()
    parts = dataset.build()
    encoder = shared.make_encoder(config)
    tokens, texts, item_vectors = shared.encode_items(config, dataset, encoder)
    row_of = {t: i for i, t in enumerate(tokens)}
    samples = collections.OrderedDict()
    for part in parts:
        samples.update(sample_prefixes(part, dataset.uid_field))
    keys = list(samples)
    recent = {k: samples[k][-config["prompt_max_items"] :] for k in keys}
    topr, aggregation = config["intent_topr"], config["intent_aggregation"]
    form = _form(config, tokens)

    def locate(answer_vectors, rows):
        if form == "dense":
            return (localise(answer_vectors, item_vectors, topr, aggregation, rows),)
        return top_items(answer_vectors, item_vectors, topr, aggregation, rows)

    # the LLM-free control, and the fallback for a reply without a usable name
    last_rows = np.fromiter((row_of[recent[k][-1]] for k in keys), dtype=np.int64, count=len(keys))
    last_item = locate(item_vectors, last_rows)

    stats = None
    intents = {view: tuple(part.copy() for part in last_item) for view in views}
    from_llm = {view: 0 for view in views}
    failed = {view: 0 for view in views}
    if source == "llm":
        requests = SessionPrompts(keys, recent, texts.prompt_texts(), views)
        answers = Answers(len(keys), views)
        generator = shared.make_generator(config, "llm4sbr", refresh)
        _, stats = shared.ask(config, generator, requests, "session intents", answers.add)
        for v, view in enumerate(views):
            rows, names = answers.of(v)
            if len(rows):
                # each distinct answer encoded once, in the order the samples first give it
                located = locate(encoder.encode(names), answers.name_rows[v][rows])
                for part, values in zip(intents[view], located):
                    part[rows] = values
            from_llm[view] = len(rows)
            failed[view] = answers.failed[v]

    files.write_table(files.file_path(config, "itemtext"), "itemtext", zip(tokens, item_vectors))
    files.write_table(
        files.file_path(config, "intent"),
        files.intent_header(views, form),
        ((k, *_cells(intents, views, j, tokens)) for j, k in enumerate(keys)),
    )
    seconds = time.perf_counter() - start
    generation = shared.log_summary(stats, encoder, seconds)
    name = config["dataset"]
    manifest = {
        **shared.manifest_header(config, "llm4sbr"),
        "encoder": {
            "model": config["encoder_model"],
            "identity": encoder.identity,
            "dim": encoder.dim,
        },
        "prompt_template": prompts.template_hash("llm4sbr"),
        "views": views,
        "dimensions": {"text": encoder.dim},
        "files": {
            f"{name}.itemtext": {"rows": len(tokens)},
            f"{name}.intent": {"rows": len(keys), "form": form},
        },
        "counts": {
            "items": len(tokens),
            "item_text_fallbacks": texts.fallback_count,
            "item_texts_cut_in_prompts": len(texts.too_long) if source == "llm" else 0,
            "samples": len(keys),
            "intents_from_llm": from_llm,
            # the LLM's answer named no item (or, within llm_max_failure_ratio, it failed)
            "intents_from_last_item": {view: len(keys) - from_llm[view] for view in views},
            "intents_failed": failed,
        },
        "generation": generation,
        "encoder_texts_encoded": encoder.encoded,
        "seconds": round(seconds, 2),
    }
    return files.write_manifest(config, "llm4sbr", manifest)
