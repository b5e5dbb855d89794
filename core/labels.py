"""Surface forms for knowledge-graph node names, used by graph loaders and entity linkers.

The one place that turns a DBpedia URI into the words a dialogue would use for it.
The graph loaders (``crs.plugins.datasets``) label nodes with it and the phrase
linker (``crs.plugins.linking``) derives surface forms with it, so the two agree;
it lives in core because a plugin never imports another plugin.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

# DBpedia disambiguates titles with a trailing parenthesised qualifier: "_(film)",
# "_(1998_film)", "_(TV_series)", "_(musician)".  Dialogues never say it, so drop it.
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_SPACES = re.compile(r"\s+")


def uri_label(uri: str) -> str:
    """The lower-cased words a URI names, without a disambiguation qualifier.

    >>> uri_label("<http://dbpedia.org/resource/Tom_Hanks>")
    'tom hanks'
    >>> uri_label("<http://dbpedia.org/resource/The_Thin_Red_Line_(1998_film)>")
    'the thin red line'
    >>> uri_label("<http://dbpedia.org/ontology/musicComposer>")
    'musiccomposer'

    Non-URI names (ConceptNet words such as "find_information") get the same
    treatment: underscores become spaces.  Returns "" when nothing is left.
    """
    name = uri.strip().strip("<>")
    if "/" in name:
        name = name.rstrip("/").rsplit("/", 1)[-1]
    name = unquote(name).replace("_", " ")
    stripped = _QUALIFIER.sub("", name)
    name = stripped if stripped.strip() else name  # "(film)" alone is kept rather than emptied
    return _SPACES.sub(" ", name).strip().lower()


def word_label(word: str) -> str:
    """Surface form of a word-graph node ("find_information" -> "find information")."""
    return _SPACES.sub(" ", word.replace("_", " ")).strip().lower()
