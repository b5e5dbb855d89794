"""A tiny causal LM *description* shipped with crs: a word-level tokenizer of the demo corpus
(616 tokens) and a 2-layer, 32-wide Llama config, without weights.

Use it as ``source: package:crs.tiny_models.causal_lm`` with ``random_init: true`` (and as the
``plm_tokens`` tokenizer) for smoke runs and contract tests that need no download.
Nothing here is imported by ``package:``; this file only makes the folder package data.
"""
