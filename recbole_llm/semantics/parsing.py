"""Turning raw LLM replies into interests (EIMF) and item names (LLM4SBR).

Small models answer in every shape: JSON arrays (complete or cut off by the token cap), JSON
objects, numbered or bulleted lists, comma-separated lines, prose. The parser takes whatever
list it can find, splits "a, b" inside one element, cleans, de-duplicates, drops echoes of
the prompt's own titles, and caps the count.
"""

import json
import re

#: Bump when parsing changes what a reply yields: semantic files made before become stale.
PARSER_VERSION = 3

_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
# markdown link targets, bare URLs and emphasis marks that small models sprinkle around
_MARKUP = re.compile(r"\]\([^)\s]*\)?|https?://\S+|www\.\S+|\*+|#+|_{2,}|`+|\|")
# words that make a phrase talk about the task instead of naming an interest
_META = re.compile(r"\b(user|users|list|example|interests?|json|array|phrase)\b", re.IGNORECASE)
_JSON_KEY = re.compile(r'^\s*"?[\w ]{1,20}"?\s*:\s*')
_BULLET = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*")
_KEY_PREFIX = re.compile(r"^\s*[\w ]{1,20}:\s+")
_STRIP = " \t\"'`[]{}.,;:!?*-\u2022"
MAX_WORDS = 6
MAX_CHARS = 48


def _json_items(text):
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    closing = "]" if text[start] == "[" else "}"
    end = text.rfind(closing)
    if end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def _loose_items(text):
    """Items of a JSON-looking reply that does not parse (cut by the token cap, or a bracketed
    list without quotes): its first line, split at commas."""
    body = text.strip().splitlines()[0].lstrip("[{").rstrip("]}")
    return [_JSON_KEY.sub("", part) for part in re.split(r",|\]\s*\[", body)]


def _line_items(text):
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        # "Interests: a, b" -> "a, b"; a lone lead-in ("The user's interests are:") -> nothing
        return re.split(r"[,;]", lines[0].rsplit(":", 1)[-1])
    return [_BULLET.sub("", line) for line in lines]


def _clean(phrase):
    phrase = _BULLET.sub("", phrase).strip(_STRIP)
    return re.sub(r"\s+", " ", phrase)


def is_list_reply(reply):
    """Whether a reply holds the JSON list (or object) the interest prompt asks for."""
    return _json_items(_FENCE.sub("", reply or "").strip()) is not None


def parse_interests(reply, max_interests, echoes=()):
    """Interests from a reply: a de-duplicated list of at most ``max_interests`` phrases.

    Args:
        reply (str): the LLM's raw text.
        max_interests (int): cap on the number of interests.
        echoes (iterable of str): texts from the prompt (item names); a phrase equal to one of
            them is an echo, not an interest, and is dropped.
    """
    text = _FENCE.sub("", reply or "").strip()
    items = _json_items(text)
    if items is None:
        text = _MARKUP.sub("", text).strip()
    if items is None:
        items = _loose_items(text) if text.startswith(("[", "{")) else _line_items(text)
    echo_set = {e.strip().lower() for e in echoes}
    seen, interests = set(), []
    for item in items:
        for part in re.split(r"[,;]", item):
            phrase = _clean(part)
            key = phrase.lower()
            if not phrase or key in seen or key in echo_set:
                continue
            if len(phrase.split()) > MAX_WORDS or len(phrase) > MAX_CHARS or _META.search(phrase):
                continue
            seen.add(key)
            interests.append(phrase)
            if len(interests) == max_interests:
                return interests
    return interests


# "The user is interested in the item named ...", "I would guess ...", "Answer: ..."
_LEAD_IN = re.compile(
    r"^(?:i\s+would\s+guess|i\s+guess|my\s+guess\s+is)\s+"
    r"|^(?:the\s+)?(?:user|item|answer)\b[^\"'“]*?(?:\bis\b|\bnamed\b|\bin\b|:)\s+",
    re.IGNORECASE,
)


def parse_item_name(reply):
    """The item name an LLM4SBR reply guesses: the quoted name if there is one, else the first
    meaningful line without a lead-in ("The item is ...") or the ``_<id>`` suffix."""
    text = _MARKUP.sub("", _FENCE.sub("", reply or "")).strip()
    for line in text.splitlines():
        quoted = re.search(r'["“]([^"”]+)["”]?', line)
        if quoted:
            line = quoted.group(1)
        else:
            line = _LEAD_IN.sub("", _KEY_PREFIX.sub("", line) if line.count(":") == 1 else line)
        line = re.sub(r"_\d+\S*$", "", _clean(line)).strip(_STRIP)
        if line:
            return line
    return ""
