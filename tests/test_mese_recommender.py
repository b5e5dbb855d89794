"""The mese recommender after a tiny random mese_plm: loss.select and loss.rank equal cross-entropies written out
by hand (the rank logits from one full causal pass, no cache), rank scores do not depend on candidate order,
evaluation scores are the rank logits on faiss's top K (= torch topk of q . k) and -inf elsewhere, and no
parameter depends on the number of items."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crs.config.validate import from_dict
from crs.interfaces import ItemIndex
from crs.plugins.mese.plm import TINY_NODE, MesePLM, replace_path
from crs.plugins.mese.recommender import MeseRecommender
from crs.testing import make_tiny_batch, make_tiny_deps

pytest.importorskip("transformers")
SELECT = 6


def make_recommender(deps=None, **overrides) -> MeseRecommender:
    deps = deps or make_tiny_deps("model.recommender")
    node = {"hidden_dim": 32, "select_dim": SELECT, "select_negatives": 2, "rank_negatives": 2, "top_k": 3,
            "rank_temperature": 1.2, **overrides}
    return MeseRecommender(from_dict(MeseRecommender.Config, node, "model.recommender"),
                           replace_path(deps, "model.recommender"))


@pytest.fixture(scope="module")
def world():
    """A tiny plm (double precision) run on the tiny batch, random keys and ITEs for all 5 items."""
    torch.manual_seed(0)
    deps = make_tiny_deps("model.plm")
    plm = MesePLM(from_dict(MesePLM.Config, dict(TINY_NODE), "model.plm"), deps).double().eval()
    batch = make_tiny_batch(deps)
    index = torch.arange(5)
    embeds = torch.randn(5, 32, dtype=torch.float64)
    keys = torch.randn(5, SELECT, dtype=torch.float64)
    out = plm({"context_turns": batch["batch.context_turns"], "item_index": index, "item_embeds": embeds})
    return {"plm": plm, "batch": batch, "deps": deps, "inputs": {
        "rec_query": out["rec_query"], "plm_context": out["plm_context"], "item_index": index,
        "item_keys": keys, "item_embeds": embeds}}


def _full_pass_rank_logits(world, rec, row: int, candidates: list[int]) -> torch.Tensor:
    """Rank logits of `candidates` after sample `row`'s D, from ONE forward over D + candidates (no cache)."""
    plm, inputs = world["plm"], world["inputs"]
    seq = plm.dialogue_sequence(world["batch"]["batch.context_turns"][row])
    embeds, _ = plm.embed([seq], inputs["item_index"], inputs["item_embeds"])
    length, m = embeds.shape[1], len(candidates)
    everything = torch.cat([embeds, inputs["item_embeds"][candidates].unsqueeze(0)], dim=1)
    seen = torch.ones(length + m, length + m, dtype=torch.bool).tril()
    seen[length:, length:] = True  # candidates see each other
    additive = torch.zeros(seen.shape, dtype=torch.float64).masked_fill(~seen, torch.finfo(torch.float64).min)
    positions = torch.cat([torch.arange(length), torch.full((m,), length)])  # one id: after [REC]
    hidden = plm.model.base_model(inputs_embeds=everything, attention_mask=additive[None, None],
                                  position_ids=positions[None]).last_hidden_state
    return rec.rank_head(hidden[0, length:]).squeeze(-1)


def test_losses_equal_hand_written_cross_entropies(world):
    rec = make_recommender().double().train()
    negatives = torch.tensor([False, False, True, False, True])  # items 2 and 4 are the drawn negatives
    out = rec({**world["inputs"], "item_negatives": negatives, "target_item": world["batch"]["batch.target_item"]})
    targets = world["batch"]["batch.target_item"].tolist()
    assert all(t >= 0 for t in targets)
    q = rec.query_projection(world["inputs"]["rec_query"])
    keys = world["inputs"]["item_keys"]
    select, rank = [], []
    for row, target in enumerate(targets):
        candidates = [target, 2, 4]
        logits = keys[candidates] @ q[row]
        select.append(-F.log_softmax(logits, dim=0)[0])
        rank_logits = _full_pass_rank_logits(world, rec, row, candidates)
        rank.append(-F.log_softmax(rank_logits / 1.2, dim=0)[0])
    assert torch.allclose(out["loss.select"], torch.stack(select).mean(), atol=1e-6)
    assert torch.allclose(out["loss.rank"], torch.stack(rank).mean(), atol=1e-5)


def test_several_targets_of_a_turn_each_give_a_pair(world):
    rec = make_recommender()
    many = torch.tensor([[1, 4], [3, 0], [2, 0]])
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    pairs = rec.targets({"target_item": torch.tensor([-1, -1, -1]), "target_items": many, "target_items_mask": mask})
    assert pairs == [(0, 1), (0, 4), (1, 3), (2, 2)]
    assert rec.targets({"target_item": torch.tensor([3, -1, 0])}) == [(0, 3), (2, 0)]


def test_rank_scores_do_not_depend_on_candidate_order(world):
    rec = make_recommender().double()
    context = world["inputs"]["plm_context"]
    embeds = world["inputs"]["item_embeds"]
    order = torch.tensor([4, 0, 3, 1, 2])
    forward = rec.rank_logits(context, embeds[torch.arange(5)].unsqueeze(0).expand(3, -1, -1))
    shuffled = rec.rank_logits(context, embeds[order].unsqueeze(0).expand(3, -1, -1))
    assert torch.allclose(shuffled, forward[:, order], atol=1e-5)
    assert not torch.allclose(forward[:, 0], forward[:, 1])  # the scores do differ between items


def test_evaluation_scores_are_rank_logits_on_the_top_k_and_minus_inf_elsewhere(world):
    rec = make_recommender(top_k=3).double().eval()
    rec.on_eval_start()
    scores = rec(world["inputs"])["scores"]
    q = rec.query_projection(world["inputs"]["rec_query"])
    top = (q @ world["inputs"]["item_keys"].T).topk(3).indices  # exact faiss = torch topk
    assert scores.shape == (3, 5)
    for row in range(3):
        finite = torch.isfinite(scores[row])
        assert set(torch.nonzero(finite).squeeze(1).tolist()) == set(top[row].tolist())
        expected = _full_pass_rank_logits(world, rec, row, top[row].tolist())
        assert torch.allclose(scores[row, top[row]], expected, atol=1e-5)
        assert torch.isneginf(scores[row][~finite]).all()


def test_chunked_rank_passes_cover_every_retrieved_item(world):
    rec = make_recommender(top_k=4, rank_chunk=2).double().eval()
    scores = rec(world["inputs"])["scores"]
    assert (torch.isfinite(scores).sum(dim=1) == 4).all()


def test_the_index_is_built_once_per_evaluation(world):
    rec = make_recommender().double().eval()
    rec.on_eval_start()
    rec(world["inputs"])
    first = rec._index
    rec(world["inputs"])
    assert rec._index is first  # the second batch searches the same index
    rec.on_eval_start()
    assert rec._index is None
    rec.train()
    assert rec._index is None


def test_training_scores_cover_the_encoded_items_only(world):
    rec = make_recommender().double().train()
    index = torch.tensor([0, 3])
    inputs = {**world["inputs"], "item_index": index, "item_keys": world["inputs"]["item_keys"][index]}
    inputs.pop("plm_context")
    out = rec(inputs)
    low = torch.finfo(torch.float64).min
    assert (out["scores"][:, [1, 2, 4]] == low).all() and (out["scores"][:, [0, 3]] > low).all()
    assert "loss.rank" not in out  # without the PLM there is nothing to rank over


def test_no_parameter_depends_on_the_number_of_items():
    small = make_tiny_deps("model.recommender")
    big = make_tiny_deps("model.recommender")
    n = 50
    big.items = ItemIndex([f"x{i}" for i in range(n)], [f"x{i}" for i in range(n)], torch.zeros(n, dtype=torch.long),
                          torch.zeros(n))
    a, b = make_recommender(small), make_recommender(big)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}

