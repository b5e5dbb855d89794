"""A tiny sentence-encoder *description* shipped with crs: an uncased WordPiece vocabulary (special
tokens, letters, digits and common English and demo-corpus words) and a 2-layer, 32-wide BertConfig,
without weights.

Use it as ``source: package:crs.tiny_models.encoder`` with ``random_init: true`` for unit tests and
contract checks of ``mese_item_encoder`` that need no model package.  Nothing here is imported by
``package:``; this file only makes the folder package data.
"""
