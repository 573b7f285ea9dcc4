"""A config as plain JSON data and back: what our checkpoints store instead of RecBole's
pickled Config (:func:`plain_config`; :func:`recbole_llm.config.restore_config` rebuilds it).
"""

import numpy as np
import torch
from recbole.utils import enum_type

from recbole_llm import keys


def _plain(value):
    """A config value as JSON data: RecBole's enums and torch devices become tagged mappings,
    tuples and sets lists, numpy scalars numbers; anything else its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum_type.Enum):
        return {"__enum__": f"{type(value).__name__}.{value.name}"}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def from_plain(value):
    """A value of :func:`plain_config` back as the config value it was."""
    if isinstance(value, dict):
        if set(value) == {"__enum__"}:
            enum_name, member = value["__enum__"].split(".")
            return getattr(enum_type, enum_name)[member]
        if set(value) == {"__device__"}:
            return torch.device(value["__device__"])
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


#: What a checkpoint stores in place of a secret-looking value (the config refuses them; this
#: also covers one set on a built config).
REDACTED = "<redacted>"


def plain_config(config):
    """The final values of ``config`` as JSON data (no pickled objects): what our checkpoints
    store instead of RecBole's pickled Config. Secret-looking keys are redacted."""
    return {
        key: REDACTED if keys.is_secret_key(key) and value else _plain(value)
        for key, value in config.final_config_dict.items()
    }
