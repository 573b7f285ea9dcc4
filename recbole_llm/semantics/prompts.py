"""Prompts: EIMF's interest prompt for typical users and LLM4SBR's long/short intent prompts.

Every prompt is a list of chat messages. :func:`template_hash` identifies the wording, so a
changed template makes earlier semantic files stale.

EIMF's prompt is one-shot (a system line, one worked example, then the user): measured on this
CPU, small models echo the zero-shot JSON prompt of the official code, while the one-shot form
with a "distinct interests" instruction gives parseable lists. The worked example fits the
dataset's ``item_noun``: movies for MovieLens, products for Amazon (``EIMF_EXAMPLES``). A noun
without its own example gets the movie one, as every dataset did before products had theirs,
so those prompts, and the shipped replies keyed by them, are unchanged.
"""

import hashlib
import json

EIMF_SYSTEM = "You describe what a person likes. Answer only with a JSON array of short phrases."
EIMF_TASK = (
    "A user {verb} these {noun}s, oldest first:\n{listing}\n"
    "List 3 to {max_interests} distinct interests of this user as a JSON array of short phrases."
)
EIMF_EXAMPLE_LISTING = [
    "Sense and Sensibility (Drama, Romance)",
    "Emma (Comedy, Drama, Romance)",
    "Persuasion (Romance)",
    "Little Women (Drama)",
]
EIMF_EXAMPLE_ANSWER = '["period romance", "literary adaptations", "costume drama"]'
EIMF_PRODUCT_LISTING = [
    "Neutrogena (Skin Care, Face, Cleansers)",
    "Olay (Skin Care, Face, Creams & Moisturizers)",
    "Maybelline (Makeup, Eyes, Mascara)",
    "Revlon (Makeup, Lips, Lipstick)",
]
EIMF_PRODUCT_ANSWER = '["facial skin care", "eye makeup", "lip color"]'
#: item_noun -> (verb, listing, answer) of the worked example
EIMF_EXAMPLES = {
    "movie": ("watched", EIMF_EXAMPLE_LISTING, EIMF_EXAMPLE_ANSWER),
    "product": ("bought", EIMF_PRODUCT_LISTING, EIMF_PRODUCT_ANSWER),
}
DEFAULT_EXAMPLE = "movie"

LLM4SBR_TASK = (
    "The order in which users click on items is as follows:\n{listing}\n"
    "Please guess an item that the user is interested in{qualifier}. "
    "(Only output the item name without any explanation.)"
)
# the paper's view qualifiers; "normal" (its ablation) asks without one
LLM4SBR_VIEWS = {"long": " in the long-term", "short": " in the short-term", "normal": ""}


def numbered(lines):
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))


def example_noun(noun):
    """The noun whose worked example an EIMF prompt for ``noun`` shows."""
    return noun if noun in EIMF_EXAMPLES else DEFAULT_EXAMPLE


def echoes_example(interests, noun):
    """Whether parsed interests only repeat the worked example's answer shown to an LLM for
    ``noun`` (a small LLM may copy it instead of reading the user's items): counted in the
    manifest, not filtered."""
    answer = {p.lower() for p in json.loads(EIMF_EXAMPLES[example_noun(noun)][2])}
    return bool(interests) and {p.lower() for p in interests} <= answer


def eimf_messages(item_texts, max_interests, noun="item", verb="interacted with", example=True):
    """Chat messages asking for a typical user's interests over its last items' texts; the
    worked example is the one for ``noun`` (:data:`EIMF_EXAMPLES`). ``example`` may name
    another noun of :data:`EIMF_EXAMPLES` whose example to show instead, or be False for
    none (prompt variants for ``benchmarks/probe_eimf_prompts.py``; the step uses the
    default)."""
    task = EIMF_TASK.format(
        verb=verb, noun=noun, listing=numbered(item_texts), max_interests=max_interests
    )
    system = {"role": "system", "content": EIMF_SYSTEM}
    if example is False:
        return [system, {"role": "user", "content": task}]
    shown = example_noun(noun) if example is True else example
    example_verb, listing, answer = EIMF_EXAMPLES[shown]
    worked = EIMF_TASK.format(
        verb=example_verb, noun=shown, listing=numbered(listing), max_interests=5
    )
    return [
        system,
        {"role": "user", "content": worked},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": task},
    ]


def llm4sbr_messages(items, view):
    """LLM4SBR's prompt for one view (``long``, ``short`` or ``normal``) of a session.

    ``items`` are ``(name, item id)`` pairs, written ``N. Name_ID`` as in the paper.
    """
    return llm4sbr_view_messages(llm4sbr_listing(f"{n}_{i}" for n, i in items), view)


def llm4sbr_listing(labels):
    """The session listing of LLM4SBR's prompts: ``labels`` (``Name_ID``) numbered, one a line
    (one listing serves each view's prompt)."""
    return numbered(labels)


def llm4sbr_view_messages(listing, view):
    """LLM4SBR's prompt for one view over a session's :func:`llm4sbr_listing`."""
    return [
        {
            "role": "user",
            "content": LLM4SBR_TASK.format(listing=listing, qualifier=LLM4SBR_VIEWS[view]),
        }
    ]


def template_hash(kind, noun=None):
    """Hash of the wording of a prompt family (``eimf`` or ``llm4sbr``); for EIMF, with the
    worked example ``noun`` gets (the movie example's hash is the one it always had)."""
    if kind == "eimf":
        parts = [EIMF_SYSTEM, EIMF_TASK, EIMF_EXAMPLE_LISTING, EIMF_EXAMPLE_ANSWER]
        shown = example_noun(noun)
        if shown != DEFAULT_EXAMPLE:
            parts.append([shown, *EIMF_EXAMPLES[shown]])
    elif kind == "llm4sbr":
        parts = [LLM4SBR_TASK, LLM4SBR_VIEWS]
    else:
        raise ValueError(f"unknown prompt family '{kind}'")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
