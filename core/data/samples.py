"""Samples (one per recommender turn) and the batch fields components read.

A :class:`Sample` is built for every recommender turn that has some context.  The
batch a component sees is a dict of tensors named ``batch.<field>``; these are the
fields (B = batch size, pads are 0 and every padded field has a ``_mask``):

=============================  =============  ==================================================
key                            shape / type   meaning
=============================  =============  ==================================================
batch.context_tokens           long (B, L)    history tokens (vocab ids), turns joined by SEP, last L kept
batch.context_tokens_mask      bool (B, L)
batch.context_entities         long (B, E)    entity-graph node ids mentioned so far (items included), in order
batch.context_entities_mask    bool (B, E)
batch.context_words            long (B, W)    word-graph node ids of context words (no stopwords)
batch.context_words_mask       bool (B, W)
batch.context_items            long (B, I)    item indices mentioned so far
batch.context_items_mask       bool (B, I)
batch.target_item              long (B,)      the item to recommend (rec samples), -1 when none
batch.target_items             long (B, T)    all items recommended in this turn; mask as usual
batch.target_items_mask        bool (B, T)
batch.response_tokens          long (B, R)    BOS y_1 .. y_n EOS, vocab ids
batch.response_tokens_mask     bool (B, R)
batch.user_index               long (B,)      user index (0 = unknown user)
batch.turn_index               long (B,)      index of the turn being answered
batch.context_text             list[list[str]] raw texts of the context turns (for PLM encoders)
batch.response_text            list[str]      raw reply text
batch.samples                  list[Sample]   the samples themselves
=============================  =============  ==================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class Sample:
    conv_id: str
    turn_index: int
    user_index: int
    context_text: list[str]
    context_tokens: list[int]
    context_entities: list[int]
    context_words: list[int]
    context_items: list[int]
    target_items: list[int]
    response_tokens: list[int]
    response_text: str
    target_item: int = -1  # set when a rec sample is expanded per target item
    meta: dict = field(default_factory=dict)

    def for_item(self, item: int) -> "Sample":
        return replace(self, target_item=item)
