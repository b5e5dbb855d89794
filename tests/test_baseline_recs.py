"""Baselines: `popularity` (train counts) and `text_cnn` (CNN over context tokens); plugin registrations."""
from __future__ import annotations

import math

import pytest
import torch

from crs.data.vocab import Vocabulary
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, ItemIndex
from crs.plugins.baselines.popularity import PopularityRecommender
from crs.plugins.baselines.text_cnn import TextCNNRecommender


@pytest.fixture
def deps():
    torch.manual_seed(0)
    items = ItemIndex(ids=list("abcd"), names=list("ABCD"), entity_nodes=torch.tensor([1, 2, 3, 4]),
                      train_counts=torch.tensor([4.0, 0.0, 9.0, 1.0]))
    vocab = Vocabulary(["good", "scary", "funny", "movie", "like"])
    return BuildDeps(path="model.recommender", items=items, vocab=vocab)


def test_popularity_ranks_by_train_counts(deps):
    pop = PopularityRecommender(PopularityRecommender.Config(), deps)
    assert list(pop.parameters()) == []  # nothing to train
    out = pop({"like": torch.zeros(3, dtype=torch.long)})
    assert set(out) == {"scores"} and out["scores"].shape == (3, 4)
    assert out["scores"][0].argsort(descending=True).tolist() == [2, 0, 3, 1]
    torch.testing.assert_close(out["scores"][1], torch.log1p(torch.tensor([4.0, 0.0, 9.0, 1.0])))


def test_text_cnn_learns_token_to_item_mapping(deps):
    model = TextCNNRecommender(TextCNNRecommender.Config(embedding_dim=16, filters=8, dropout=0.0), deps)
    tokens = torch.tensor([[5, 6, 8, 0], [7, 8, 0, 0], [6, 6, 6, 9], [9, 8, 0, 0]])
    target = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        out = model({"tokens": tokens, "mask": tokens > 0, "target": target})
        opt.zero_grad(), out["loss"].backward(), opt.step()
        losses.append(out["loss"].item())
    assert out["scores"].shape == (4, 4)
    assert losses[-1] < 0.2 * losses[0]
    # and a floor: cross-entropy is >= 0, well under log(4) (scores that cannot tell the 4 items apart)
    assert math.isfinite(losses[-1]) and 0.0 <= losses[-1] < 0.2 * math.log(4)
    assert (out["scores"].argmax(1) == target).all()


def test_text_cnn_short_inputs_and_no_target(deps):
    model = TextCNNRecommender(TextCNNRecommender.Config(embedding_dim=8, filters=4), deps)
    model.eval()
    out = model({"tokens": torch.tensor([[5], [0]]), "mask": torch.tensor([[True], [False]])})
    assert out["scores"].shape == (2, 4) and "loss" not in out  # shorter than the widest filter
    none = model({"tokens": torch.tensor([[5, 6]]), "mask": torch.tensor([[True, True]]), "target": torch.tensor([-1])})
    assert none["loss"].item() == 0.0 and none["loss"].requires_grad


def test_text_cnn_config_errors(deps):
    with pytest.raises(ConfigError, match="model.recommender.widths"):
        TextCNNRecommender(TextCNNRecommender.Config(widths=[]), deps)
    with pytest.raises(ConfigError, match="model.recommender.filters"):
        TextCNNRecommender(TextCNNRecommender.Config(filters=0), deps)
    with pytest.raises(ConfigError, match="vocab"):
        TextCNNRecommender(TextCNNRecommender.Config(), BuildDeps(path="model.recommender", items=deps.items))


def test_plugins_register_lazy_references_that_resolve():
    import importlib

    from crs.plugins import baselines, kgsf

    seen: dict[str, str] = {}
    for plugin in (kgsf, baselines):
        for hook in ("crs_register_external_encoders", "crs_register_user_encoders", "crs_register_recommenders",
                     "crs_register_fusion_objectives", "crs_register_generators"):
            if hasattr(plugin, hook):
                getattr(plugin, hook)(lambda name, ref: seen.__setitem__(name, ref))
    assert {"gcn", "rgcn", "self_attention_pool", "gate", "dot_product", "mim", "kgsf_decoder",
            "popularity", "text_cnn", "transformer"} <= set(seen)
    # the references written by this task resolve to classes (generators belong to another module owner)
    for name in ("gcn", "rgcn", "self_attention_pool", "gate", "dot_product", "mim", "popularity", "text_cnn"):
        module, _, cls = seen[name].partition(":")
        assert isinstance(getattr(importlib.import_module(module), cls), type), name
