"""The LLM-semantics step: item text -> prompts -> LLM -> encoder -> RecBole atomic files.

It knows nothing about models. :mod:`recbole_llm.semantics.pipeline` runs it for a config;
:mod:`recbole_llm.data.dataset` is the only place that turns its files into tensors.
Importing this package imports nothing heavy; backends load transformers, sentence-transformers
or llama_cpp only when they are used.
"""
