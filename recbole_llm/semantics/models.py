"""Which LLM a config means: the embedded default, the opt-in Qwen, or a local file or folder;
and its identity (the weights' hash, or the served name), which keys the reply cache and the
semantic files' settings. Nothing here loads a model.
"""

import hashlib
import json
import os

from recbole_llm import assets
from recbole_llm.errors import UserError
from recbole_llm.keys import SERVED_BACKENDS
from recbole_llm.paths import models_dir

DEFAULT_LLM = "SmolLM2-135M-Instruct"


class LLMError(RuntimeError, UserError):
    """An LLM request failed for good (after retries) or the backend is misconfigured.

    A user error (the command line prints its message in one line and exits with status 2),
    and still the RuntimeError it always was.
    """


def resolve_local_model(name):
    """Path of a local model: the embedded default or the opt-in Qwen by name, else an existing
    file or folder."""
    if name in (None, "", DEFAULT_LLM):
        return assets.smollm2_gguf_path(verify=True)
    if name == assets.QWEN_NAME:  # assembled once into $RECBOLE_LLM_CACHE/models
        return assets.qwen_gguf_path(models_dir())
    path = os.path.expanduser(name)
    if os.path.exists(path):
        return path
    raise LLMError(
        f"llm_model '{name}' is neither '{DEFAULT_LLM}' (the embedded default), "
        f"'{assets.QWEN_NAME}' (opt-in: {assets.QWEN_INSTALL_HINT}) nor an existing file or folder. Give the path of a GGUF file or a Hugging Face model folder; nothing "
        "is downloaded at run time."
    )


def weights_identity(path):
    """Identity of local weights: the sha256 of a GGUF file, or of a folder's weight files."""
    if os.path.isfile(path):
        return "sha256:" + assets.file_sha256(path)
    meta = os.path.join(path, "recbole_llm.json")
    if os.path.exists(meta):  # a folder we converted from a GGUF keeps the GGUF's identity
        with open(meta, encoding="utf-8") as f:
            return json.load(f)["identity"]
    digest = hashlib.sha256()
    names = sorted(
        n for n in os.listdir(path) if n.endswith((".safetensors", ".bin", ".gguf", ".json"))
    )
    if not names:
        raise LLMError(f"'{path}' holds no model weights (*.safetensors, *.bin, *.gguf)")
    for name in names:
        digest.update(name.encode())
        digest.update(assets.file_sha256(os.path.join(path, name)).encode())
    return "sha256:" + digest.hexdigest()


def model_identity(config):
    """The cache identity of the configured LLM, without loading it."""
    if config["llm_backend"] in SERVED_BACKENDS:
        return f"served:{config['llm_model']}"
    return weights_identity(resolve_local_model(config["llm_model"]))
