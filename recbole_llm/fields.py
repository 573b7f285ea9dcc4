"""Names of the batch fields the semantic datasets add and the models read.

The one thing :mod:`recbole_llm.data` and :mod:`recbole_llm.model` must agree on; it imports
nothing, so neither layer imports the other.
"""

#: batch field: each interaction's row in the typical users' interest table (0: no semantics)
INTEREST_ROW = "semantic_interest_row"


def intent_field(view):
    """Batch field of a view's intent vectors (``long_intent``, ``short_intent``, ...)."""
    return f"{view}_intent"


def intent_items_field(view):
    """Batch field of a compact view's top-r item ids ``[B, r]`` (its weights:
    :func:`intent_weights_field`); the intent vector is their weighted sum of item texts."""
    return f"{view}_intent_items"


def intent_weights_field(view):
    """Batch field of a compact view's top-r item weights ``[B, r]``."""
    return f"{view}_intent_weights"
