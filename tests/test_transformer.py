"""Transformer building blocks (crs.nn): masks, encoder, decoder with a chain of memories, decoding helpers."""
import pytest
import torch
import torch.nn.functional as F

from crs.nn import (
    DecoderLayer,
    SafeAttention,
    TransformerDecoder,
    TransformerEncoder,
    greedy_decode,
    keep_last,
    shift_targets,
    token_nll,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_keep_last_keeps_the_last_real_tokens_for_left_and_right_padding():
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0], [0, 0, 9, 10, 11, 12], [3, 0, 0, 0, 0, 0]])
    kept, mask = keep_last(tokens, tokens != 0, 3)
    assert kept.tolist() == [[6, 7, 8], [10, 11, 12], [3, 0, 0]]
    assert mask.tolist() == [[True] * 3, [True] * 3, [True, False, False]]


def test_encoder_shapes_zero_padding_and_truncation():
    encoder = TransformerEncoder(50, dim=16, heads=4, layers=2, ffn_dim=32, dropout=0.0, max_len=4).eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]])
    states, mask = encoder(tokens)
    assert states.shape == (3, 4, 16) and mask.shape == (3, 4)
    assert mask.tolist()[1] == [True] * 4 and mask.tolist()[2] == [False] * 4
    assert torch.isfinite(states).all()
    assert states[0, 3].abs().sum() == 0 and states[2].abs().sum() == 0  # padding and empty rows stay zero
    # the truncated row keeps its last four tokens: same states as encoding them alone
    alone, _ = encoder(torch.tensor([[3, 4, 5, 6]]))
    assert torch.allclose(states[1], alone[0], atol=1e-5)


def test_encoder_states_and_gradients_do_not_depend_on_the_batchs_padding():
    """The layers run on packed real tokens: a row encoded in a padded batch equals it encoded alone."""
    encoder = TransformerEncoder(60, dim=16, heads=4, layers=2, ffn_dim=32, dropout=0.0).eval()
    lengths = [5, 1, 9, 0, 3]
    tokens = torch.zeros(len(lengths), 9, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, :n] = torch.randint(1, 60, (n,))
    states, mask = encoder(tokens)
    (states * torch.randn_like(states)).sum().backward()  # gradients flow through the scatter and the gathers
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())
    for row, n in enumerate(lengths):
        assert states[row, n:].abs().sum() == 0
        if n:
            alone, _ = encoder(tokens[row:row + 1, :n])
            assert torch.allclose(states[row, :n], alone[0], atol=1e-5)
    # a batch of one padded row: the padding is ignored, not attended to
    padded, _ = encoder(torch.cat([tokens[2:3], torch.zeros(1, 4, dtype=torch.long)], dim=1))
    assert torch.allclose(padded[0, :9], states[2], atol=1e-5)


def test_safe_attention_all_padding_memory_gives_zero_output_and_finite_gradients():
    attention = SafeAttention(8, 2, dropout=0.0)
    query = torch.randn(2, 3, 8, requires_grad=True)
    keys = torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    out = attention(query, keys, mask)
    assert torch.isfinite(out).all()
    assert out[1].abs().sum() == 0 and out[0].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(query.grad).all()
    empty = attention(query, keys[:, :0], mask[:, :0])  # a memory of length zero
    assert empty.shape == query.shape and empty.abs().sum() == 0


def test_safe_attention_ignores_padded_keys():
    attention = SafeAttention(8, 2, dropout=0.0)
    query, keys = torch.randn(1, 2, 8), torch.randn(1, 3, 8)
    mask = torch.tensor([[True, True, False]])
    changed = keys.clone()
    changed[0, 2] = 100.0
    assert torch.allclose(attention(query, keys, mask), attention(query, changed, mask), atol=1e-6)


def _memories(batch=2):
    a = (torch.randn(batch, 5, 16), torch.tensor([[True] * 5, [True, True, False, False, False]])[:batch])
    b = (torch.randn(batch, 3, 16), torch.zeros(batch, 3, dtype=torch.bool))  # e.g. no context entities
    return {"a": a, "b": b}


def test_decoder_is_causal():
    decoder = TransformerDecoder(30, 16, 4, 2, 32, dropout=0.0, sources=("a", "b")).eval()
    memories = _memories()
    tokens = torch.randint(5, 30, (2, 6))
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 5) % 25 + 5
    hidden, hidden_changed = decoder(tokens, memories), decoder(changed, memories)
    assert torch.allclose(hidden[:, :4], hidden_changed[:, :4], atol=1e-5)
    assert not torch.allclose(hidden[:, 4:], hidden_changed[:, 4:], atol=1e-3)


def test_decoder_chain_uses_every_source_in_order_and_needs_all_of_them():
    decoder = TransformerDecoder(30, 16, 4, 1, 32, dropout=0.0, sources=("a", "b")).eval()
    assert list(decoder.layers[0].cross_attn) == ["a", "b"]
    memories = _memories()
    tokens = torch.randint(5, 30, (2, 4))
    hidden = decoder(tokens, memories)
    assert torch.isfinite(hidden).all()
    other = dict(memories, a=(memories["a"][0] + 1.0, memories["a"][1]))
    assert not torch.allclose(hidden, decoder(tokens, other), atol=1e-4)  # source "a" is attended
    with pytest.raises(KeyError):
        decoder(tokens, {"a": memories["a"]})


def test_prepared_memories_match_raw_memories():
    decoder = TransformerDecoder(30, 16, 4, 2, 32, dropout=0.0, sources=("a", "b")).eval()
    memories = _memories()
    tokens = torch.randint(5, 30, (2, 4))
    assert torch.allclose(decoder(tokens, memories), decoder(tokens, decoder.prepare(memories)), atol=1e-6)


def test_decoder_layer_rejects_missing_sources_when_preparing():
    layer = DecoderLayer(16, 4, 32, 0.0, sources=("words", "entities", "encoder"))
    with pytest.raises(KeyError, match="entities"):
        layer.prepare({"words": _memories()["a"], "encoder": _memories()["a"]})


def test_token_nll_matches_cross_entropy_with_and_without_label_smoothing():
    logits = torch.randn(2, 4, 7)
    targets = torch.randint(1, 7, (2, 4))
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    log_probs = F.log_softmax(logits, -1)
    flat_targets = targets.masked_fill(~mask, -100).view(-1)
    for smoothing in (0.0, 0.1):
        stats = token_nll(log_probs, targets, mask, smoothing)
        expected = F.cross_entropy(logits.view(-1, 7), flat_targets, ignore_index=-100, label_smoothing=smoothing)
        assert torch.allclose(stats["loss"], expected, atol=1e-5)
    plain = F.cross_entropy(logits.view(-1, 7), flat_targets, ignore_index=-100, reduction="sum")
    assert torch.allclose(stats["nll_sum"], plain, atol=1e-4)
    assert stats["nll_count"].item() == 4.0 and stats["nll_count"].dtype == torch.float32


def test_shift_targets_drops_bos_from_targets_and_last_token_from_inputs():
    response = torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    decoder_input, targets, mask = shift_targets(response, response != 0)
    assert decoder_input.tolist() == [[2, 7, 8, 3], [2, 9, 3, 0]]
    assert targets.tolist() == [[7, 8, 3, 0], [9, 3, 0, 0]]
    assert mask.sum().item() == 5


def test_greedy_decode_stops_at_eos_and_pads_after_it():
    script = {0: [7, 3], 1: [8, 9]}  # row 0 ends after two tokens, row 1 never produces EOS
    calls = []

    def step(prefix):
        calls.append(prefix.clone())
        t = prefix.size(1) - 1
        scores = torch.zeros(2, 12)
        for row, tokens in script.items():
            scores[row, tokens[t] if t < len(tokens) else 10] = 1.0
        return scores

    out = greedy_decode(step, 2, bos=2, eos=3, pad=0, max_len=4)
    assert out.tolist() == [[7, 3, 0, 0], [8, 9, 10, 10]]
    assert calls[0].tolist() == [[2], [2]]  # decoding starts from BOS, which is not returned
    early = greedy_decode(lambda p: torch.nn.functional.one_hot(torch.tensor([3, 3]), 12).float(), 2,
                          bos=2, eos=3, max_len=10)
    assert early.tolist() == [[3], [3]]  # stops as soon as every row has ended
