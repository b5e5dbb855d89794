"""crs.nn.dropout.Dropout: nn.Dropout's distribution with a cheaper CPU mask."""
from __future__ import annotations

import pytest
import torch

from crs.nn.dropout import Dropout, dropout_mask


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_each_element_is_dropped_with_probability_p_in_every_lane(p: float) -> None:
    torch.manual_seed(0)
    keep, scale = dropout_mask(torch.Size([4000, 64]), p, torch.device("cpu"))
    dropped = (~keep).float().view(-1, 4)  # one 64-bit random word per four elements: check each position
    per_lane = dropped.mean(0)
    # 64,000 draws per lane: the standard error of the rate is at most 0.002
    assert torch.allclose(per_lane, torch.full((4,), p), atol=0.01), per_lane
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)


def test_kept_elements_are_scaled_so_the_expectation_is_unchanged_and_the_gradient_follows_the_mask() -> None:
    torch.manual_seed(1)
    x = torch.full((1000, 100), 2.0, requires_grad=True)
    layer = Dropout(0.2).train()
    y = layer(x)
    kept = y != 0
    threshold = round(0.2 * 65536)
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0 * 65536 / (65536 - threshold)))
    assert y.mean().item() == pytest.approx(2.0, rel=0.01)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * 65536 / (65536 - threshold))


def test_the_same_seed_gives_the_same_mask_and_evaluation_is_the_identity() -> None:
    layer = Dropout(0.3).train()
    x = torch.randn(7, 9, 11)  # an element count that is not a multiple of four
    torch.manual_seed(5)
    first = layer(x)
    torch.manual_seed(5)
    assert torch.equal(layer(x), first) and (first == 0).any()
    assert layer.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_a_probability_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)
