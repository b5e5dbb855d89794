"""Node surface forms, re-exported from :mod:`crs.labels` for this plugin's graph loaders.

The definitions live in core (the entity-linking plugin uses them too, and a plugin
never imports another plugin); this module keeps ``from .labels import ...`` working.
"""
from crs.labels import uri_label, word_label

__all__ = ["uri_label", "word_label"]
