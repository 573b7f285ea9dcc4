"""Names of the batch fields the semantic datasets add and the models read.

The one thing :mod:`recbole_llm.data` and :mod:`recbole_llm.model` must agree on; it imports
nothing, so neither layer imports the other.
"""

#: batch field: each interaction's row in the typical users' interest table (0: no semantics)
INTEREST_ROW = "semantic_interest_row"


def intent_field(view):
    """Batch field of a view's intent vectors (``long_intent``, ``short_intent``, ...)."""
    return f"{view}_intent"
