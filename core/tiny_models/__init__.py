"""Tiny model *descriptions* (configs and tokenizers, no weights) for smoke runs and unit tests.

``package:crs.tiny_models.causal_lm`` (a 2-layer Llama with a word-level demo tokenizer) and
``package:crs.tiny_models.encoder`` (a 2-layer BERT with a small WordPiece vocabulary), each with
``random_init: true``.  They live in core because several plugins' tests and contract checks use
them (plm, mese): a plugin must not reach into another plugin package's files.
"""
