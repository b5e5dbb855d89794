"""Loss values, not loss trends: ``loss.rec`` and ``loss.mim`` equal their formulas on fixed inputs.

A trend check (``losses[-1] < 0.5 * losses[0]``) also holds when a loss runs off to minus
infinity: a flipped sign on the recommendation loss passed every unit test that way (issue 15).
These tests feed hand-built inputs through the real components and compare the loss with an
independent computation (``F.cross_entropy``; the MIM terms written out per entity node, with the
sampled negatives injected), and check that training moves the target item up the ranking.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crs.data.vocab import Vocabulary
from crs.interfaces import BuildDeps, ItemIndex
from crs.plugins.baselines.text_cnn import TextCNNRecommender
from crs.plugins.kgsf import mim as mim_module
from crs.plugins.kgsf.mim import MutualInformationObjective
from crs.plugins.kgsf.recommender import DotProductRecommender

# Five items living at entity nodes 6, 2, 7, 3, 1 (not in order, so a wrong index mapping shows).
ITEM_NODES = [6, 2, 7, 3, 1]
N_ITEMS = len(ITEM_NODES)
NUM_NODES = 10  # node 0 is the pad node


@pytest.fixture
def deps() -> BuildDeps:
    items = ItemIndex(ids=list("abcde"), names=list("ABCDE"), entity_nodes=torch.tensor(ITEM_NODES),
                      train_counts=torch.tensor([3.0, 0.0, 1.0, 7.0, 2.0]))
    vocab = Vocabulary(["good", "scary", "funny", "movie", "like"])
    return BuildDeps(path="model.slot", items=items, vocab=vocab)


def _rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample, how many items score strictly higher than the target (0 = ranked first)."""
    return (scores > scores.gather(1, target[:, None])).sum(1)


# ------------------------------------------------------------------------------------- loss.rec
@pytest.mark.parametrize("item_bias", [False, True])
def test_dot_product_loss_rec_is_cross_entropy_of_its_scores(deps, item_bias):
    rec = DotProductRecommender(DotProductRecommender.Config(dim=3, item_bias=item_bias), deps)
    if item_bias:
        with torch.no_grad():
            rec.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0, 0.25]))
    nodes = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0],
                          [9.0, 9.0, 9.0], [-1.0, 0.5, 2.0], [0.3, -0.7, 1.1], [2.0, 2.0, 2.0], [4.0, 0.0, 1.0]])
    user = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [-0.2, 0.3, 0.1], [2.0, 1.0, -1.0]])
    target = torch.tensor([4, -1, 0, 2])  # sample 1 has no target and must not count

    out = rec({"user": user, "entity_nodes": nodes, "target": target})

    by_hand = user @ nodes[ITEM_NODES].t() + (rec.bias if item_bias else 0.0)
    torch.testing.assert_close(out["scores"], by_hand)
    has = target >= 0
    torch.testing.assert_close(out["loss"], F.cross_entropy(by_hand[has], target[has]))
    # the same number from the formula: mean over targeted samples of logsumexp(scores) - score(target)
    by_formula = (by_hand[has].logsumexp(1) - by_hand[has].gather(1, target[has][:, None]).squeeze(1)).mean()
    torch.testing.assert_close(out["loss"], by_formula)
    assert out["loss"].item() > 0.1  # far from 0, so a sign error cannot hide in the tolerance


def test_dot_product_loss_rec_is_log_n_items_for_scores_that_cannot_tell_items_apart(deps):
    rec = DotProductRecommender(DotProductRecommender.Config(dim=3), deps)
    out = rec({"user": torch.zeros(2, 3), "entity_nodes": torch.randn(NUM_NODES, 3), "target": torch.tensor([0, 4])})
    assert out["loss"].item() == pytest.approx(math.log(N_ITEMS), rel=1e-6)


def test_text_cnn_loss_rec_is_cross_entropy_of_its_scores(deps):
    torch.manual_seed(0)
    model = TextCNNRecommender(TextCNNRecommender.Config(embedding_dim=8, filters=4, dropout=0.0), deps).eval()
    tokens = torch.tensor([[5, 6, 8, 0], [7, 8, 0, 0], [6, 6, 6, 9], [9, 8, 0, 0]])
    target = torch.tensor([1, 3, -1, 0])
    out = model({"tokens": tokens, "mask": tokens > 0, "target": target})
    has = target >= 0
    torch.testing.assert_close(out["loss"], F.cross_entropy(out["scores"][has], target[has]))
    with torch.no_grad():  # an output layer of zeros scores every item alike: the loss is log(n_items)
        model.output.weight.zero_(), model.output.bias.zero_()
    zero = model({"tokens": tokens, "mask": tokens > 0, "target": target})["loss"]
    assert zero.item() == pytest.approx(math.log(N_ITEMS), rel=1e-6)


def _dot_product_case(deps):
    torch.manual_seed(3)
    rec = DotProductRecommender(DotProductRecommender.Config(dim=4, item_bias=True), deps)
    nodes = torch.nn.Parameter(torch.randn(NUM_NODES, 4))  # trained too, as the R-GCN's output is in KGSF
    user = torch.nn.Parameter(torch.randn(4, 4))
    inputs = {"user": user, "entity_nodes": nodes}
    return [user, nodes, *rec.parameters()], lambda: rec(inputs)["scores"], rec, inputs


def _text_cnn_case(deps):
    torch.manual_seed(3)
    model = TextCNNRecommender(TextCNNRecommender.Config(embedding_dim=8, filters=4, dropout=0.0), deps)
    tokens = torch.tensor([[5, 6, 8, 0], [7, 8, 0, 0], [6, 6, 6, 9], [9, 8, 0, 0]])
    inputs = {"tokens": tokens, "mask": tokens > 0}
    return list(model.parameters()), lambda: model(inputs)["scores"], model, inputs


@pytest.mark.parametrize("case", [_dot_product_case, _text_cnn_case], ids=["dot_product", "text_cnn"])
def test_training_on_loss_rec_raises_the_target_items_rank(deps, case):
    params, scores_now, model, inputs = case(deps)
    with torch.no_grad():
        before = scores_now()
    target = before.argmin(1)  # each sample's worst-ranked item is its target
    assert (_rank(before, target) == N_ITEMS - 1).all()
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(25):
        loss = model({**inputs, "target": target})["loss"]
        opt.zero_grad(), loss.backward(), opt.step()
    with torch.no_grad():
        after_scores = scores_now()
        final = model({**inputs, "target": target})["loss"].item()
    assert (_rank(after_scores, target) == 0).all(), _rank(after_scores, target)
    # better than scores that cannot tell the items apart, and a cross-entropy is never negative
    assert 0.0 <= final < 0.5 * math.log(N_ITEMS)


# ------------------------------------------------------------------------------------- loss.mim
WORD_DIM, ENTITY_DIM = 4, 3
WORDS = torch.tensor([[1, 2, 3], [4, 0, 0], [0, 0, 0]])
ENTITIES = torch.tensor([[6, 7], [8, 0], [9, 0]])
TARGET = torch.tensor([1, -1, 2])
# Positives by hand: context entities plus the target item's node (item 1 -> node 2, item 2 -> node 7).
# Sample 2 has no context word, so it does not count at all.
POSITIVES = {0: [2, 6, 7], 1: [8]}


def _mim(deps, negatives: int):
    torch.manual_seed(0)
    mim = MutualInformationObjective(MutualInformationObjective.Config(word_dim=WORD_DIM, entity_dim=ENTITY_DIM,
                                                                       negatives=negatives), deps)
    word_nodes, entity_nodes = torch.randn(6, WORD_DIM), torch.randn(NUM_NODES, ENTITY_DIM)
    inputs = {"word_nodes": word_nodes, "entity_nodes": entity_nodes, "words": WORDS, "words_mask": WORDS > 0,
              "entities": ENTITIES, "entities_mask": ENTITIES > 0, "target": TARGET}
    with torch.no_grad():  # the per-sample summary T v~ of Eq. 5, which the hand computation scores against
        summary = mim.transform(mim.super_tokens(word_nodes, WORDS, WORDS > 0)).double()
    return mim, inputs, summary, entity_nodes.double()


def _hand_mim(summary, entity_nodes, negatives: dict[int, list[int]]) -> tuple[float, float]:
    """Mean over counted samples of the positive term and of the negative term, one node at a time."""
    pos_terms, neg_terms = [], []
    for b, positives in POSITIVES.items():
        g = [torch.sigmoid(summary[b] @ entity_nodes[e]).item() for e in positives]
        pos_terms.append(sum(-math.log(x) for x in g) / len(g))
        g = [torch.sigmoid(summary[b] @ entity_nodes[e]).item() for e in negatives[b]]
        neg_terms.append(sum(-math.log(1.0 - x) for x in g) / len(g))
    return sum(pos_terms) / len(pos_terms), sum(neg_terms) / len(neg_terms)


def test_mim_with_all_negatives_equals_its_positive_and_negative_terms(deps):
    mim, inputs, summary, entity_nodes = _mim(deps, negatives=0)
    # every other node but the pad node is a negative
    negatives = {b: [e for e in range(1, NUM_NODES) if e not in pos] for b, pos in POSITIVES.items()}
    positive, negative = _hand_mim(summary, entity_nodes, negatives)
    assert positive > 0.05 and negative > 0.05  # dropping either term moves the loss well past the tolerance
    loss = mim(inputs)["loss"]
    assert loss.item() == pytest.approx(positive + negative, rel=1e-5)


def test_mim_with_sampled_negatives_equals_its_terms_over_the_drawn_nodes(deps, monkeypatch):
    mim, inputs, summary, entity_nodes = _mim(deps, negatives=4)
    # Injected draws: sample 0 draws positive node 2 (dropped) and node 5 twice (counted twice);
    # sample 1 draws its positive node 8 (dropped); sample 2 does not count.
    draws = torch.tensor([[2, 5, 5, 9], [1, 8, 3, 4], [1, 2, 3, 4]])
    calls = []

    def fake_randint(low, high, size, **kwargs):
        calls.append((low, high, tuple(size)))
        return draws.clone()

    monkeypatch.setattr(mim_module.torch, "randint", fake_randint)
    loss = mim(inputs)["loss"]
    monkeypatch.undo()
    assert calls == [(1, NUM_NODES, (3, 4))]  # uniform over nodes 1..N-1: never the pad node
    positive, negative = _hand_mim(summary, entity_nodes, {0: [5, 5, 9], 1: [1, 3, 4]})
    assert positive > 0.05 and negative > 0.05
    assert loss.item() == pytest.approx(positive + negative, rel=1e-5)


def test_mim_is_two_log_two_when_every_score_is_zero(deps):
    mim, inputs, _, _ = _mim(deps, negatives=0)
    with torch.no_grad():
        mim.transform.weight.zero_()  # g = sigmoid(0) = 1/2 for every node: each term is log 2
    assert mim(inputs)["loss"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
