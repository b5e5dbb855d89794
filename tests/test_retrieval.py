"""crs.nn.retrieval.ItemRetrieval: the faiss index a recommender searches at evaluation.

Exact search must return what ``torch.topk(q @ K.T)`` returns (the training objective ranks by
q . k, so the index may never change the top K), under the caller's item ids; cosine must rank
by normalised vectors; HNSW must find the exact neighbours on a small set; ``add`` appends.
"""
from __future__ import annotations

import pytest
import torch

from crs.nn.retrieval import ItemRetrieval


def _keys(n: int = 300, d: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randn(7, d, generator=gen)


def test_exact_search_equals_torch_topk_under_the_given_ids():
    keys, queries = _keys()
    ids = torch.arange(len(keys)) * 3 + 1000  # ids are not positions
    scores, found = ItemRetrieval(keys.shape[1]).build(keys, ids).search(queries, 10)
    expected = torch.topk(queries @ keys.T, 10)
    assert torch.equal(found, ids[expected.indices])
    assert torch.allclose(scores, expected.values, atol=1e-4)
    assert found.dtype == torch.long and scores.dtype == torch.float32


def test_cosine_ranks_by_normalised_vectors_not_by_inner_product():
    keys, queries = _keys()
    keys = keys * torch.linspace(0.1, 10, len(keys))[:, None]  # norms differ: inner product and cosine disagree
    _, found = ItemRetrieval(keys.shape[1], metric="cosine").build(keys).search(queries, 5)
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).T
    assert torch.equal(found, torch.topk(cosine, 5).indices)
    _, by_ip = ItemRetrieval(keys.shape[1]).build(keys).search(queries, 5)
    assert not torch.equal(found, by_ip)


def test_hnsw_finds_the_exact_neighbours_of_a_small_set():
    keys, queries = _keys(n=500)
    _, exact = ItemRetrieval(keys.shape[1]).build(keys).search(queries, 20)
    _, approx = ItemRetrieval(keys.shape[1], index="hnsw", ef_search=200).build(keys).search(queries, 20)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(approx, exact)) / exact.numel()
    assert overlap >= 0.95


def test_add_appends_under_new_ids_and_fewer_items_than_k_pad_with_minus_one():
    keys, queries = _keys(n=4)
    index = ItemRetrieval(keys.shape[1]).build(keys[:3])
    scores, found = index.search(queries, 5)
    assert (found[:, 3:] == -1).all() and torch.isinf(scores[:, 3:]).all() and (scores[:, 3:] < 0).all()
    index.add(keys[3:], torch.tensor([42]))
    assert len(index) == 4
    _, found = index.search(keys[3:] * 100, 1)  # the new key's own direction, scaled: itself first
    assert found.tolist() == [[42]]


def test_rebuild_replaces_the_contents():
    keys, queries = _keys()
    index = ItemRetrieval(keys.shape[1]).build(keys)
    index.build(-keys)  # e.g. the keys after a parameter update
    _, found = index.search(queries, 3)
    assert torch.equal(found, torch.topk(queries @ (-keys).T, 3).indices) and len(index) == len(keys)


@pytest.mark.parametrize("kwargs", [{"metric": "dot"}, {"index": "ivf"}, {"dim": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ItemRetrieval(**{"dim": 8, **kwargs})


def test_wrong_key_width_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        ItemRetrieval(8).build(torch.zeros(3, 5))
