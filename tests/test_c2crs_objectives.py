"""C2-CRS's contrastive objectives (crs.nn.contrastive, c2crs_coarse, c2crs_fine), spec §8: NT-Xent against a
NumPy reference and its closed form on orthonormal users; the fine loss's rows (singletons dropped, k positives ->
k rows, the same_sample mask's zero gradient); both components over their views; and learning: two noisy views of
shared latents end up aligned, and fine units retrieve their entity across views."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crs.config.validate import from_dict
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.nn.contrastive import fine_pair_rows, masked_info_nce, nt_xent
from crs.plugins.c2crs.objectives import CoarseContrastiveObjective, FineContrastiveObjective, table_view

TAU = 0.07


def numpy_nt_xent(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    """SimCLR NT-Xent written anchor by anchor: positive = same sample in the other view, negatives = all other rows."""
    z = np.concatenate([a, b])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = np.array([z[i] @ z[j] / tau for j in others])
        total += -(z[i] @ z[positive] / tau) + np.log(np.exp(logits).sum())
    return total / (2 * n)


def numpy_fine(z: np.ndarray, entity: list[int], sample: list[int], tau: float, same_sample: bool) -> float:
    """The fine loss written row by row: drop singletons; one row per (anchor, other unit of its entity)."""
    keep = [i for i in range(len(entity)) if entity.count(entity[i]) > 1]
    z, entity, sample = z[keep], [entity[i] for i in keep], [sample[i] for i in keep]
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    rows = []
    for u in range(len(z)):
        others = [v for v in range(len(z)) if v != u]
        logits = {v: (z[u] @ z[v] / tau) * (1.0 if (not same_sample or sample[u] == sample[v]) else 0.0)
                  for v in others}
        norm = np.log(sum(np.exp(x) for x in logits.values()))
        rows += [norm - logits[p] for p in others if entity[p] == entity[u]]
    return float(np.mean(rows)) if rows else 0.0


# ------------------------------------------------------------------ coarse
def test_nt_xent_equals_a_numpy_reference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    got = nt_xent(torch.tensor(a), torch.tensor(b), TAU)
    assert float(got) == pytest.approx(numpy_nt_xent(a, b, TAU), rel=1e-9)


@pytest.mark.parametrize("batch", [2, 5, 8])
def test_nt_xent_of_identical_orthonormal_views_has_the_closed_form(batch):
    # positive cosine 1, the 2B - 2 negatives cosine 0: L = -log(e^{1/tau} / (e^{1/tau} + 2B - 2))
    users = torch.linalg.qr(torch.randn(8, 8, dtype=torch.double))[0][:batch]
    expected = -math.log(math.exp(1 / TAU) / (math.exp(1 / TAU) + 2 * batch - 2))
    assert float(nt_xent(users, users.clone(), TAU)) == pytest.approx(expected, rel=1e-9)


def test_nt_xent_keep_drops_samples_and_an_empty_batch_is_a_zero_with_a_gradient():
    rng = np.random.default_rng(1)
    a, b = torch.tensor(rng.normal(size=(5, 4))), torch.tensor(rng.normal(size=(5, 4)))
    keep = torch.tensor([True, False, True, True, False])
    assert float(nt_xent(a, b, TAU, keep)) == pytest.approx(numpy_nt_xent(a[keep].numpy(), b[keep].numpy(), TAU))
    a.requires_grad_(True)
    zero = nt_xent(a, b, TAU, torch.zeros(5, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0.0 and a.grad is not None


def make_objective(cls, **config):
    torch.manual_seed(0)
    return cls(from_dict(cls.Config, config, "model.objective"), BuildDeps(path="model.objective")).double()


def test_coarse_objective_is_the_mean_of_its_view_pairs_through_its_own_heads():
    objective = make_objective(CoarseContrastiveObjective, views={"context": 6, "kg": 4, "review": 5})
    assert {name: port.key for name, port in objective.input_ports().items()} == {
        "context": "user_context", "kg": "user_entity", "review": "user_review"}
    views = {"context": torch.randn(7, 6, dtype=torch.double), "kg": torch.randn(7, 4, dtype=torch.double),
             "review": torch.randn(7, 5, dtype=torch.double)}
    z = {name: objective.heads[name](x).detach().numpy() for name, x in views.items()}
    expected = np.mean([numpy_nt_xent(z["context"], z["kg"], TAU), numpy_nt_xent(z["context"], z["review"], TAU),
                        numpy_nt_xent(z["kg"], z["review"], TAU)])
    assert float(objective(views)["loss"].detach()) == pytest.approx(expected, rel=1e-9)


def test_coarse_skip_empty_leaves_out_samples_whose_view_is_zero_per_pair():
    objective = make_objective(CoarseContrastiveObjective, views={"a": 3, "b": 3}, skip_empty=True)
    assert {name: port.key for name, port in objective.input_ports().items()} == {"a": "user_a", "b": "user_b"}
    a, b = torch.randn(5, 3, dtype=torch.double), torch.randn(5, 3, dtype=torch.double)
    b[2] = 0.0  # e.g. a context that mentions no entity
    keep = torch.tensor([True, True, False, True, True])
    za, zb = objective.heads["a"](a).detach().numpy(), objective.heads["b"](b).detach().numpy()
    got = float(objective({"a": a, "b": b})["loss"].detach())
    assert got == pytest.approx(numpy_nt_xent(za[keep], zb[keep], TAU), rel=1e-9)
    kept_all = make_objective(CoarseContrastiveObjective, views={"a": 3, "b": 3})  # the code keeps them
    assert float(kept_all({"a": a, "b": b})["loss"].detach()) == pytest.approx(numpy_nt_xent(za, zb, TAU), rel=1e-9)


@pytest.mark.parametrize("config, key", [({"temperature": 0.0}, "temperature"), ({"views": {"a": 3}}, "views"),
                                         ({"views": {"a": 3, "b": 0}}, "views.b"), ({"proj_dim": 0}, "proj_dim")])
def test_coarse_config_mistakes_are_config_errors_at_the_key(config, key):
    with pytest.raises(ConfigError) as err:
        make_objective(CoarseContrastiveObjective, **config)
    assert f"model.objective.{key}" in str(err.value)


# -------------------------------------------------------------------- fine
def test_fine_rows_give_k_rows_to_an_anchor_with_k_positives_and_none_to_singletons():
    anchors, positives = fine_pair_rows(torch.tensor([5, 5, 5, 7, 7, 9]))
    rows = sorted(zip(anchors.tolist(), positives.tolist()))
    assert rows == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3)]  # unit 5 (entity 9): none


@pytest.mark.parametrize("same_sample", [True, False])
def test_fine_loss_equals_a_row_by_row_reference(same_sample):
    rng = np.random.default_rng(2)
    entity = [3, 3, 4, 3, 4, 8, 4]  # entity 8 is a singleton
    sample = [0, 1, 0, 1, 1, 0, 2]
    z = rng.normal(size=(7, 5))
    got = masked_info_nce(torch.tensor(z), torch.tensor(entity), torch.tensor(sample), TAU, same_sample)
    assert float(got) == pytest.approx(numpy_fine(z, entity, sample, TAU, same_sample), rel=1e-9)


def test_fine_loss_drops_singletons_even_as_negatives():
    rng = np.random.default_rng(3)
    z = torch.tensor(rng.normal(size=(5, 4)))
    entity, sample = torch.tensor([1, 1, 2, 2, 6]), torch.tensor([0, 0, 0, 0, 0])
    with_singleton = masked_info_nce(z, entity, sample, TAU)
    without = masked_info_nce(z[:4], entity[:4], sample[:4], TAU)
    assert float(with_singleton) == pytest.approx(float(without), rel=1e-12)
    # no entity occurs twice: no row, a zero that still back-propagates
    lonely = z[:3].clone().requires_grad_(True)
    loss = masked_info_nce(lonely, torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), TAU)
    loss.backward()
    assert float(loss.detach()) == 0.0 and lonely.grad is not None


def test_same_sample_gives_no_gradient_to_a_unit_whose_partners_are_all_in_other_samples():
    # unit 0 (entity 1) is alone in sample 0; its only partner, unit 1, sits in sample 1
    z = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    entity, sample = torch.tensor([1, 1, 2, 2, 3]), torch.tensor([0, 1, 1, 1, 1])
    masked_info_nce(z, entity, sample, TAU, same_sample=True).backward()
    assert float(z.grad[0].abs().sum()) == 0.0 and float(z.grad[1:].abs().sum()) > 0
    z.grad = None
    masked_info_nce(z, entity, sample, TAU, same_sample=False).backward()
    assert float(z.grad[0].abs().sum()) > 0


def test_table_view_keeps_one_unit_per_distinct_entity_with_the_first_sample_mentioning_it():
    table = torch.arange(10, dtype=torch.double).unsqueeze(1).repeat(1, 2)  # row e = (e, e)
    index = torch.tensor([[0, 7, 3], [3, 5, 0], [5, 7, 9]])
    mask = torch.tensor([[False, True, True], [True, True, False], [True, True, False]])
    vectors, entity, sample = table_view(table, index, mask)
    assert entity.tolist() == [3, 5, 7] and sample.tolist() == [0, 1, 0]  # 9 is masked
    assert vectors[:, 0].tolist() == [3.0, 5.0, 7.0]


def test_fine_objective_pairs_its_views_with_real_sample_ids():
    objective = make_objective(FineContrastiveObjective, views={"context": 6, "kg": 4, "review": 5})
    keys = {name: port.key for name, port in objective.input_ports().items()}
    assert keys == {"context_states": "mention_states", "context_nodes": "mention_nodes",
                    "context_mask": "mention_mask", "kg_table": "entity_nodes", "kg_index": "mention_nodes",
                    "kg_index_mask": "mention_mask", "review_states": "review_states",
                    "review_nodes": "review_nodes", "review_mask": "review_mask"}
    mention_nodes = torch.tensor([[4, 6, 0], [6, 0, 0], [4, 2, 6]])
    mention_mask = mention_nodes > 0
    review_nodes = torch.tensor([[4, 6], [6, 0], [2, 0]])
    review_mask = review_nodes > 0
    inputs = {"context_states": torch.randn(3, 3, 6, dtype=torch.double), "context_nodes": mention_nodes,
              "context_mask": mention_mask, "kg_table": torch.randn(8, 4, dtype=torch.double),
              "kg_index": mention_nodes, "kg_index_mask": mention_mask,
              "review_states": torch.randn(3, 2, 5, dtype=torch.double), "review_nodes": review_nodes,
              "review_mask": review_mask}
    rows, cols = mention_mask.nonzero(as_tuple=True)
    context = (objective.heads["context"](inputs["context_states"][rows, cols]), mention_nodes[rows, cols], rows)
    kg = (objective.heads["kg"](inputs["kg_table"][torch.tensor([2, 4, 6])]), torch.tensor([2, 4, 6]),
          torch.tensor([2, 0, 0]))
    rows, cols = review_mask.nonzero(as_tuple=True)
    review = (objective.heads["review"](inputs["review_states"][rows, cols]), review_nodes[rows, cols], rows)

    def pair(x, y):
        z = torch.cat([x[0], y[0]]).detach().numpy()
        return numpy_fine(z, torch.cat([x[1], y[1]]).tolist(), torch.cat([x[2], y[2]]).tolist(), TAU, True)

    expected = np.mean([pair(context, kg), pair(context, review), pair(kg, review)])
    assert float(objective(inputs)["loss"].detach()) == pytest.approx(expected, rel=1e-9)


def test_fine_tables_must_be_views():
    with pytest.raises(ConfigError) as err:
        make_objective(FineContrastiveObjective, views={"a": 3, "b": 3}, tables=["kg"])
    assert "model.objective.tables.0" in str(err.value) and "fix:" in str(err.value)


# ---------------------------------------------------------------- learning
def noisy_views(latents: torch.Tensor, maps: tuple[torch.Tensor, torch.Tensor], noise: float, generator):
    return tuple(latents @ m + noise * torch.randn(latents.shape[0], m.shape[1], generator=generator) for m in maps)


def mean_cosines(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean cosine of aligned pairs (same row) and of all other pairs."""
    sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).t()
    off = ~torch.eye(len(a), dtype=torch.bool)
    return float(sim.diagonal().mean()), float(sim[off].mean())


def test_coarse_training_aligns_two_noisy_views_of_shared_latents():
    generator = torch.Generator().manual_seed(0)
    maps = (torch.randn(8, 20, generator=generator), torch.randn(8, 12, generator=generator))
    torch.manual_seed(0)
    objective = CoarseContrastiveObjective(from_dict(CoarseContrastiveObjective.Config,
                                                     {"views": {"a": 20, "b": 12}, "proj_dim": 16}, "o"),
                                           BuildDeps(path="o"))
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        a, b = noisy_views(torch.randn(64, 8, generator=generator), maps, 0.3, generator)
        loss = objective({"a": a, "b": b})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) <= 0.5 * np.mean(losses[:5])
    with torch.no_grad():
        a, b = noisy_views(torch.randn(256, 8, generator=generator), maps, 0.3, generator)
        aligned, random = mean_cosines(objective.heads["a"](a), objective.heads["b"](b))
    assert aligned - random > 0.5, (aligned, random)


def test_fine_training_retrieves_each_entity_across_views():
    generator = torch.Generator().manual_seed(1)
    entities = torch.randn(400, 8, generator=generator)  # entity 0 unused (pad)
    maps = (torch.randn(8, 20, generator=generator), torch.randn(8, 12, generator=generator))
    torch.manual_seed(1)
    config = {"views": {"a": 20, "b": 12}, "tables": [], "proj_dim": 16, "negatives": "batch"}
    objective = FineContrastiveObjective(from_dict(FineContrastiveObjective.Config, config, "o"), BuildDeps(path="o"))
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for _ in range(200):
        nodes = torch.randint(1, 300, (16, 4), generator=generator)  # 16 samples, 4 mentions each; 300+ held out
        a, b = noisy_views(entities[nodes.reshape(-1)], maps, 0.3, generator)
        mask = torch.ones(16, 4, dtype=torch.bool)
        loss = objective({"a_states": a.view(16, 4, -1), "a_nodes": nodes, "a_mask": mask,
                          "b_states": b.view(16, 4, -1), "b_nodes": nodes, "b_mask": mask})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        held_out = entities[300:]
        a, b = noisy_views(held_out, maps, 0.3, generator)
        za = torch.nn.functional.normalize(objective.heads["a"](a), dim=-1)
        zb = torch.nn.functional.normalize(objective.heads["b"](b), dim=-1)
        top1 = float(((za @ zb.t()).argmax(1) == torch.arange(len(held_out))).double().mean())
    assert top1 >= 0.9, top1
