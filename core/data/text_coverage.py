"""Which item texts a pipeline reads, and how much of the data they cover (for the run report).

Review text is scarce (ReDial: 20-token review snippets for 2,693 of its 6,924 items, plots
for 6,451; BENCHMARKS.md section 2), so a figure obtained with item texts means little without saying which text
stood in and for how many items.  The pipeline builder hands every model slot a
:class:`TextLookups` view of the loaded item texts, which notes the sources the slot looks
up, in order: a reader that asks for ``reviews`` and then ``metadata`` uses the second
where the first has no text (C2-CRS's review encoder, ``sources: [reviews, metadata]``).
:func:`text_coverage` then counts, per source and per reader:

- ``items``: items of the pipeline's item index with at least one text, and their share;
- ``context_items``: per split, the share of the samples' context items (one per sample
  and item in ``context_items``) that have a text, i.e. that a reader gets a unit for;
- ``samples``: per split, the share of samples with at least one such context item;
- for readers, ``by_source``: which source supplied the text of those context items.

Sources are named with their knowledge name, ``kind`` and ``label`` (e.g. "RevCore review
snippets", "item metadata: plot"), so a report never calls a plot a review.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ..knowledge import ItemTexts


class TextLookups(dict):
    """A component's view of the pipeline's item texts that notes which sources it looks up, in order."""

    def __init__(self, item_texts: Mapping[str, ItemTexts]):
        super().__init__(item_texts)
        self.names: list[str] = []

    def _note(self, name: str) -> None:
        if name in self and name not in self.names:
            self.names.append(name)

    def __getitem__(self, name: str) -> ItemTexts:
        self._note(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self._note(name)
        return super().get(name, default)


def _shares(counts: Mapping[str, int], total: int) -> dict[str, float | None]:
    return {name: round(n / total, 4) if total else None for name, n in counts.items()}


def _context_coverage(chain: Sequence[str], item_texts: Mapping[str, ItemTexts], item_ids: Sequence[str],
                      samples: Iterable[Any]) -> dict[str, Any]:
    """Context items with a text from the first source of `chain` that has one, over `samples`."""
    supplied = {name: 0 for name in chain}
    total = with_text = samples_total = samples_with_text = 0
    for sample in samples:
        samples_total += 1
        found_any = False
        for item in sample.context_items:
            total += 1
            item_id = item_ids[item]
            source = next((name for name in chain if item_texts[name].texts.get(item_id)), None)
            if source is not None:
                supplied[source] += 1
                with_text += 1
                found_any = True
        samples_with_text += found_any
    return {"context_items": total, "context_items_with_text": round(with_text / total, 4) if total else None,
            "samples": samples_total,
            "samples_with_text": round(samples_with_text / samples_total, 4) if samples_total else None,
            "by_source": _shares(supplied, total)}


def text_coverage(item_texts: Mapping[str, ItemTexts], item_ids: Sequence[str], samples: Mapping[str, list],
                  readers: Mapping[str, Sequence[str]], knowledge: Mapping[str, Mapping] | None = None,
                  vocab_item_texts: Sequence[str] = ()) -> dict:
    """The ``item_texts`` section of a run report (see the module docstring).

    :param item_ids: the pipeline's item ids (``ItemIndex.ids``; samples' context items index them).
    :param samples: split -> samples.
    :param readers: reader (YAML path of a model slot) -> source names in the order it read them.
    :param knowledge: the spec's ``knowledge:`` nodes, for each source's ``type``.
    :param vocab_item_texts: ``samples.vocab_item_texts``: sources whose words joined the vocabulary.
    """
    knowledge = knowledge or {}
    sources = {}
    for name, texts in item_texts.items():
        n = sum(1 for item_id in item_ids if texts.texts.get(item_id))
        sources[name] = {
            "type": str((knowledge.get(name) or {}).get("type", "")), "kind": texts.kind, "label": texts.label,
            "items_with_text": n, "items": len(item_ids),
            "items_share": round(n / len(item_ids), 4) if item_ids else None,
            "splits": {split: _context_coverage([name], item_texts, item_ids, split_samples)
                       for split, split_samples in samples.items()},
        }
        for split_report in sources[name]["splits"].values():
            del split_report["by_source"]  # one source: by_source is context_items_with_text again
    return {
        "sources": sources,
        "readers": {path: {"sources": list(chain),
                           "splits": {split: _context_coverage(chain, item_texts, item_ids, split_samples)
                                      for split, split_samples in samples.items()}}
                    for path, chain in readers.items() if chain},
        "vocab_item_texts": list(vocab_item_texts),
    }


def coverage_lines(report: Mapping[str, Any], split: str) -> list[str]:
    """One console line per source and per reader: what the texts are and how much of `split` they cover."""
    lines = []
    for name, source in report.get("sources", {}).items():
        cover = source["splits"].get(split, {})
        lines.append(f"item texts '{name}' ({source['label'] or source['kind']}): {source['items_with_text']:,} of "
                     f"{source['items']:,} items; {_percent(cover.get('context_items_with_text'))} of {split} "
                     f"context items")
    for path, reader in report.get("readers", {}).items():
        cover = reader["splits"].get(split, {})
        parts = ", ".join(f"{name} {_percent(share)}" for name, share in cover.get("by_source", {}).items())
        lines.append(f"{path} reads {' > '.join(reader['sources'])}: {_percent(cover.get('context_items_with_text'))}"
                     f" of {split} context items have a text ({parts}); "
                     f"{_percent(cover.get('samples_with_text'))} of samples have one or more")
    if report.get("vocab_item_texts"):
        lines.append(f"vocabulary: train words, then the words of item texts {', '.join(report['vocab_item_texts'])}")
    return lines


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"
