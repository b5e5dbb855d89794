"""crs.nn.kv_cache on a tiny random Llama: a block run over a cached prefix equals one full pass with the same
4-D mask, a candidate block is order-invariant, a reply over a cropped cache equals a full pass, gradients reach
the block's embeddings and the prefix, and a row scores the same alone as in a left-padded batch."""
from __future__ import annotations

import pytest
import torch

from crs.nn.kv_cache import (
    CachedPrefix,
    block_attention_mask,
    causal_block,
    full_block,
    left_pad,
    run_block,
    run_prefix,
)

transformers = pytest.importorskip("transformers")
H = 16


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=H, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(config).double().eval()


def _prefix_rows(lengths, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, H, generator=gen, dtype=torch.float64) for n in lengths]


def _full_pass(model, prefix_embeds, prefix_mask, block_embeds, block_positions, block):
    """Prefix and block in ONE forward with the equivalent (P+M)x(P+M) mask: the reference."""
    batch, width = prefix_mask.shape
    m = block_embeds.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    prefix_rows = causal.unsqueeze(0) & prefix_mask.unsqueeze(1)
    prefix_rows = prefix_rows | torch.eye(width, dtype=torch.bool)  # pad rows see themselves (never read)
    top = torch.cat([prefix_rows, torch.zeros(batch, width, m, dtype=torch.bool)], dim=2)
    bottom = torch.cat([prefix_mask.unsqueeze(1).expand(batch, m, width), block.expand(batch, m, m)], dim=2)
    seen = torch.cat([top, bottom], dim=1)
    additive = torch.zeros(seen.shape, dtype=torch.float64).masked_fill(~seen, torch.finfo(torch.float64).min)
    positions = torch.cat([(prefix_mask.long().cumsum(1) - 1).clamp(min=0), block_positions], dim=1)
    out = model.base_model(inputs_embeds=torch.cat([prefix_embeds, block_embeds], dim=1),
                           attention_mask=additive.unsqueeze(1), position_ids=positions)
    return out.last_hidden_state[:, width:]


def test_a_candidate_block_over_the_cache_equals_one_full_pass(llama):
    embeds, mask = left_pad(_prefix_rows([7, 4]))
    _, prefix = run_prefix(llama, embeds, mask)
    candidates = torch.randn(2, 5, H, dtype=torch.float64)
    positions = prefix.next_position().unsqueeze(1).expand(2, 5)
    hidden, _ = run_block(llama, prefix, candidates, positions, full_block(5))
    reference = _full_pass(llama, embeds, mask, candidates, positions, full_block(5))
    assert torch.allclose(hidden, reference, atol=1e-5)
    # and the prefix is untouched by the block run: a second block gives the same answer
    again, _ = run_block(llama, prefix, candidates, positions, full_block(5))
    assert torch.allclose(again, hidden, atol=1e-12)


def test_candidate_scores_do_not_depend_on_their_order(llama):
    embeds, mask = left_pad(_prefix_rows([6]))
    _, prefix = run_prefix(llama, embeds, mask)
    candidates = torch.randn(1, 6, H, dtype=torch.float64)
    positions = prefix.next_position().unsqueeze(1).expand(1, 6)
    hidden, _ = run_block(llama, prefix, candidates, positions, full_block(6))
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled, _ = run_block(llama, prefix, candidates[:, order], positions, full_block(6))
    assert torch.allclose(shuffled, hidden[:, order], atol=1e-5)
    # a causal block over the same candidates is not order-invariant: the test can tell
    causal, _ = run_block(llama, prefix, candidates, positions, causal_block(6))
    causal_shuffled, _ = run_block(llama, prefix, candidates[:, order], positions, causal_block(6))
    assert not torch.allclose(causal_shuffled, causal[:, order], atol=1e-5)


def test_a_reply_over_a_cropped_cache_equals_a_full_causal_pass(llama):
    rows = _prefix_rows([8, 5])
    reply = torch.randn(2, 4, H, dtype=torch.float64)
    # Reference: each whole sequence (prefix minus its last token, then the reply) as one plain causal pass.
    full_rows = [torch.cat([row[:-1], reply[i]]) for i, row in enumerate(rows)]
    full_embeds, full_mask = left_pad(full_rows)
    reference, _ = run_prefix(llama, full_embeds, full_mask)
    embeds, mask = left_pad(rows)
    _, prefix = run_prefix(llama, embeds, mask)
    for cut in (prefix.crop(prefix.length - 1), prefix.hide_last(torch.tensor([True, True]))):
        positions = cut.next_position().unsqueeze(1) + torch.arange(4)
        hidden, extended = run_block(llama, cut, reply, positions, causal_block(4))
        assert torch.allclose(hidden, reference[:, -4:], atol=1e-5)
        assert extended.length == cut.length + 4


def test_hiding_the_last_token_of_some_rows_only(llama):
    rows = _prefix_rows([6, 6])
    embeds, mask = left_pad(rows)
    _, prefix = run_prefix(llama, embeds, mask)
    reply = torch.randn(2, 3, H, dtype=torch.float64)
    hidden_rows = torch.tensor([True, False])
    cut = prefix.hide_last(hidden_rows)
    positions = cut.next_position().unsqueeze(1) + torch.arange(3)
    hidden, _ = run_block(llama, cut, reply, positions, causal_block(3))
    _, alone_kept = run_prefix(llama, *left_pad([rows[1]]))
    alone, _ = run_block(llama, alone_kept, reply[1:], alone_kept.next_position().unsqueeze(1) + torch.arange(3),
                         causal_block(3))
    assert torch.allclose(hidden[1:], alone, atol=1e-5)
    _, alone_cut = run_prefix(llama, *left_pad([rows[0][:-1]]))
    cut_alone, _ = run_block(llama, alone_cut, reply[:1], alone_cut.next_position().unsqueeze(1) + torch.arange(3),
                             causal_block(3))
    assert torch.allclose(hidden[:1], cut_alone, atol=1e-5)


def test_a_row_alone_equals_the_row_in_a_left_padded_batch(llama):
    rows = _prefix_rows([3, 9])
    batch_hidden, batch_prefix = run_prefix(llama, *left_pad(rows))
    alone_hidden, alone_prefix = run_prefix(llama, *left_pad(rows[:1]))
    assert torch.allclose(batch_hidden[0, -3:], alone_hidden[0], atol=1e-5)
    candidates = torch.randn(2, 4, H, dtype=torch.float64)
    batch_block, _ = run_block(llama, batch_prefix, candidates, batch_prefix.next_position().unsqueeze(1).expand(2, 4),
                               full_block(4))
    alone_block, _ = run_block(llama, alone_prefix, candidates[:1],
                               alone_prefix.next_position().unsqueeze(1).expand(1, 4), full_block(4))
    assert torch.allclose(batch_block[:1], alone_block, atol=1e-5)


def test_gradients_reach_the_block_embeddings_and_the_prefix(llama):
    embeds, mask = left_pad(_prefix_rows([5]))
    embeds.requires_grad_(True)
    _, prefix = run_prefix(llama, embeds, mask)
    candidates = torch.randn(1, 3, H, dtype=torch.float64, requires_grad=True)
    hidden, _ = run_block(llama, prefix, candidates, prefix.next_position().unsqueeze(1).expand(1, 3), full_block(3))
    hidden.sum().backward()
    assert candidates.grad.abs().sum() > 0 and embeds.grad.abs().sum() > 0


def test_block_padding_is_hidden_from_real_positions():
    prefix_mask = torch.tensor([[False, True, True]])
    keys = torch.tensor([[True, True, False]])
    mask = block_attention_mask(prefix_mask, full_block(3), torch.float32, keys)[0, 0]
    seen = mask == 0
    assert seen.tolist() == [[False, True, True, True, True, False],
                             [False, True, True, True, True, False],
                             [False, True, True, True, True, True]]  # the pad query sees itself: no empty row


def test_rows_and_repeat_rows_select_the_right_prefix():
    kv = [(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 1), torch.zeros(3, 1, 2, 1))]
    prefix = CachedPrefix(kv, torch.ones(3, 2, dtype=torch.bool), torch.arange(2).expand(3, 2))
    repeated = prefix.repeat_rows(torch.tensor([2, 0, 1]))
    assert repeated.keys_values[0][0][:, 0, 0, 0].tolist() == [0.0, 0.0, 2.0]
