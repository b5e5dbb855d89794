"""KGSF rec side: self-attentive pooling (Eq. 6), gate (Eq. 7), dot-product recommender (Eq. 8-9), MIM (Eq. 4-5)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crs.interfaces import BuildDeps, ItemIndex
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.nn import SelfAttentivePool
from crs.plugins.kgsf.gcn import WordGraphGCN
from crs.plugins.kgsf.mim import MutualInformationObjective
from crs.plugins.kgsf.recommender import DotProductRecommender
from crs.plugins.kgsf.rgcn import EntityGraphRGCN
from crs.plugins.kgsf.user_encoders import GateUserEncoder, SelfAttentionPoolEncoder

DIM = 8


@pytest.fixture
def deps():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    graphs = {}
    for name, role, n in (("entity_kg", ENTITY, 20), ("word_kg", WORD, 15)):
        kg = KnowledgeGraph(role, [f"{name}{i}" for i in range(n)], ["r0", "r1"], rng.integers(0, n, 50),
                            rng.integers(0, 2, 50), rng.integers(0, n, 50))
        graphs[name] = IndexedGraph.from_graph(name, kg)
    items = ItemIndex(ids=list("abcde"), names=list("ABCDE"), entity_nodes=torch.tensor([1, 2, 3, 4, 5]),
                      train_counts=torch.tensor([3.0, 0.0, 1.0, 7.0, 2.0]))
    return BuildDeps(path="model.slot", graphs=graphs, items=items)


def test_pool_masks_positions_and_zeroes_empty_rows():
    pool = SelfAttentivePool(4)
    states = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    alpha = pool.weights(states, mask)
    assert torch.allclose(alpha.sum(1), torch.tensor([1.0, 0.0, 1.0]))
    assert (alpha[0, 2:] == 0).all()
    pooled = pool(states, mask)
    assert not torch.isnan(pooled).any() and (pooled[1] == 0).all()
    changed = states.clone()
    changed[0, 2:] = 100.0  # masked positions must not matter
    torch.testing.assert_close(pool(changed, mask)[0], pooled[0])
    pooled.sum().backward()  # no NaN gradients from the all-masked row
    assert all(not torch.isnan(p.grad).any() for p in pool.parameters())


def test_self_attention_pool_encoder_ports_and_output(deps):
    enc = SelfAttentionPoolEncoder(SelfAttentionPoolEncoder.Config(dim=DIM), deps)
    ports = enc.input_ports()
    assert (ports["nodes"].key, ports["index"].key, ports["mask"].key) == (
        "entity_nodes", "batch.context_entities", "batch.context_entities_mask")
    assert enc.output_ports()["pooled"].key == "user_entity"
    nodes = torch.randn(21, DIM)
    index = torch.tensor([[3, 0], [5, 6]])
    out = enc({"nodes": nodes, "index": index, "mask": index > 0})["pooled"]
    assert out.shape == (2, DIM)
    torch.testing.assert_close(out[0], nodes[3])  # one mentioned node: its own vector


def test_gate_mixes_its_two_inputs(deps):
    gate = GateUserEncoder(GateUserEncoder.Config(dim=DIM), deps)
    a, b = torch.randn(4, DIM), torch.randn(4, DIM)
    user = gate({"a": a, "b": b})["user"]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    assert ((user >= lo - 1e-6) & (user <= hi + 1e-6)).all()  # a convex mix per dimension
    assert not torch.allclose(user, a) and not torch.allclose(user, b)
    with torch.no_grad():
        gate.gate.bias.fill_(50.0)  # beta -> 1: all of `a`
    torch.testing.assert_close(gate({"a": a, "b": b})["user"], a, atol=1e-4, rtol=0)
    scalar = GateUserEncoder(GateUserEncoder.Config(dim=DIM, scalar_gate=True), deps)
    assert scalar.gate.out_features == 1 and scalar({"a": a, "b": b})["user"].shape == (4, DIM)


def test_dot_product_scores_items_and_learns(deps):
    rec = DotProductRecommender(DotProductRecommender.Config(dim=DIM), deps)
    nodes = torch.randn(21, DIM)
    user = torch.randn(4, DIM)
    out = rec({"user": user, "entity_nodes": nodes})
    assert out["scores"].shape == (4, 5) and "loss" not in out  # no target: no loss
    torch.testing.assert_close(out["scores"][:, 2], user @ nodes[3])  # item 2 lives at node 3
    assert torch.isfinite(rec({"user": user, "entity_nodes": nodes, "target": torch.full((4,), -1)})["loss"])

    user = torch.nn.Parameter(torch.randn(4, DIM))
    target = torch.tensor([0, 3, 4, 3])
    opt = torch.optim.Adam([user], lr=0.1)
    losses = []
    for _ in range(30):
        loss = rec({"user": user, "entity_nodes": nodes, "target": target})["loss"]
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    # against a floor too: a loss running off to minus infinity also falls below half its first value;
    # a cross-entropy is >= 0, and log(5) is what scores that cannot tell the 5 items apart give
    assert losses[-1] < 0.5 * losses[0]
    assert math.isfinite(losses[-1]) and 0.0 <= losses[-1] < 0.5 * math.log(5)


def test_item_bias_option(deps):
    rec = DotProductRecommender(DotProductRecommender.Config(dim=DIM, item_bias=True), deps)
    with torch.no_grad():
        rec.bias.copy_(torch.arange(5.0))
    out = rec({"user": torch.zeros(1, DIM), "entity_nodes": torch.randn(21, DIM)})["scores"]
    assert out.tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0]]


def test_popularity_bias_init_ranks_like_popularity_before_training(deps, registry):
    rec = DotProductRecommender(DotProductRecommender.Config(dim=DIM, item_bias=True, bias_init="popularity"), deps)
    scores = rec({"user": torch.zeros(2, DIM), "entity_nodes": torch.randn(21, DIM)})["scores"]
    # train_counts 3, 0, 1, 7, 2 -> smoothed shares (c + 1) / 18: a distribution, in popularity order
    assert torch.allclose(scores[0].exp().sum(), torch.tensor(1.0))
    assert scores[0].argsort(descending=True).tolist() == [3, 0, 4, 2, 1]
    assert torch.allclose(scores[0, 3].exp(), torch.tensor(8.0 / 18.0))
    with pytest.raises(Exception, match="bias_init"):
        registry.build("recommender", {"type": "dot_product", "dim": DIM, "item_bias": True, "bias_init": "zipf"},
                       "model.recommender", deps)


def test_frozen_bias_is_a_saved_buffer_that_training_leaves_alone(deps):
    cfg = DotProductRecommender.Config(dim=DIM, item_bias=True, bias_init="popularity", bias_trainable=False)
    rec = DotProductRecommender(cfg, deps)
    assert "bias" not in dict(rec.named_parameters()) and "bias" in rec.state_dict()
    before = rec.bias.clone()
    nodes = torch.randn(21, DIM, requires_grad=True)
    user = torch.randn(3, DIM, requires_grad=True)
    loss = rec({"user": user, "entity_nodes": nodes, "target": torch.tensor([0, 1, 2])})["loss"]
    loss.backward()
    torch.optim.SGD([user, nodes, *rec.parameters()], lr=1.0).step()
    assert torch.equal(rec.bias, before) and user.grad is not None


def mim_batch():
    return {
        "words": torch.tensor([[1, 2, 3], [4, 0, 0], [0, 0, 0]]),
        "entities": torch.tensor([[6, 7], [8, 0], [9, 0]]),
        "target": torch.tensor([1, -1, 2]),
    }


@pytest.mark.parametrize("negatives", [0, 6])
def test_mim_loss_falls_when_optimised(deps, negatives):
    torch.manual_seed(1)
    gcn = WordGraphGCN(WordGraphGCN.Config(dim=DIM), deps)
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=DIM, num_bases=2), deps)
    mim = MutualInformationObjective(MutualInformationObjective.Config(word_dim=DIM, entity_dim=DIM,
                                                                       negatives=negatives), deps)
    batch = mim_batch()
    inputs = {"words": batch["words"], "words_mask": batch["words"] > 0, "entities": batch["entities"],
              "entities_mask": batch["entities"] > 0, "target": batch["target"]}
    params = [*gcn.parameters(), *rgcn.parameters(), *mim.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    losses = []
    for _ in range(40):
        loss = mim({**inputs, "word_nodes": gcn({})["nodes"], "entity_nodes": rgcn({})["nodes"]})["loss"]
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert mim.transform.weight.grad is not None and rgcn.layers[0].bases.grad is not None
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    # MIM is a sum of two binary cross-entropies (>= 0); 2 log 2 is what all-zero scores give
    assert math.isfinite(losses[-1]) and 0.0 <= losses[-1] < 0.5 * 2 * math.log(2), losses[::10]


def test_mim_positives_and_empty_batch(deps):
    mim = MutualInformationObjective(MutualInformationObjective.Config(word_dim=DIM, entity_dim=DIM), deps)
    batch = mim_batch()
    positive = mim.positives({"entities": batch["entities"], "entities_mask": batch["entities"] > 0,
                              "target": batch["target"]}, num_nodes=21)
    assert positive[0].nonzero().squeeze(1).tolist() == [2, 6, 7]  # target item 1 -> node 2
    assert positive[1].nonzero().squeeze(1).tolist() == [8]
    assert positive[2].nonzero().squeeze(1).tolist() == [3, 9]
    assert not positive[:, 0].any()
    empty = torch.zeros(2, 3, dtype=torch.long)
    out = mim({"word_nodes": torch.randn(16, DIM, requires_grad=True), "entity_nodes": torch.randn(21, DIM),
               "words": empty, "words_mask": empty > 0, "entities": empty, "entities_mask": empty > 0})["loss"]
    assert out.item() == 0.0 and out.requires_grad  # nothing to align: a differentiable zero


def test_mim_checks_dims_via_ports(deps):
    mim = MutualInformationObjective(MutualInformationObjective.Config(word_dim=6, entity_dim=10), deps)
    ports = mim.input_ports()
    assert ports["word_nodes"].dim == 6 and ports["entity_nodes"].dim == 10
    assert mim.output_ports()["loss"].key == "loss.mim"
