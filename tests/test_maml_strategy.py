"""The ``maml`` training strategy (crs.plugins.training.maml) run by the real Trainer.

The task family of the CCRS spec §6: user t answers y = a_t * u.x with a_t ~ U[-2, 2]
(E[a_t] = 0), over the model v * (W x) with W outer-only and v adapted.  Pooled training
cannot do better than predicting ~0 for every user; MAML learns a W that one inner step
of v exploits.  Each user has four conversations of five points, so support and query
are two random halves of them, as for ReDial seekers.
"""
from __future__ import annotations

import json
import random
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from crs.config.spec import OptimizerSpec, ScheduleSpec, StageSpec
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, ModelComponent, Port
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import BATCH_KEYS, wire
from crs.training import Trainer, meta

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # the shared toy model, whatever pytest's import mode
from test_meta import D, U, make_model  # noqa: E402

INNER_LR = 0.1
CONVERSATIONS, POINTS = 4, 5  # per user, per conversation


# ------------------------------------------------------------------ data
@dataclass
class Point:
    conv_id: str
    user_index: int
    turn_index: int
    x: list[float]
    y: float


def user_points(users: int, seed: int, first_user: int = 1, conversations: int = CONVERSATIONS) -> list[Point]:
    gen = torch.Generator().manual_seed(seed)
    points = []
    for user in range(first_user, first_user + users):
        a = float(torch.empty(()).uniform_(-2, 2, generator=gen))
        for conv in range(conversations):
            x = torch.randn(POINTS, D, generator=gen)
            points += [Point(f"u{user}c{conv}", user, turn, row.tolist(), a * float(row @ U))
                       for turn, row in enumerate(x)]
    return points


def collate(points: list[Point], dtype: torch.dtype = torch.float32) -> dict:
    return {"batch.x": torch.tensor([p.x for p in points], dtype=dtype),
            "batch.y": torch.tensor([p.y for p in points], dtype=dtype), "batch.samples": list(points)}


class SimulatedKill(Exception):
    pass


class MetaPipeline:
    """The pipeline API the trainer uses, over a real PipelineModel; strategies come from the real registry."""

    def __init__(self, stages: list[StageSpec], train: list[Point], *, dtype: torch.dtype = torch.float32,
                 model: Any = None):
        self.model = model if model is not None else make_model(seed=1, dtype=dtype)
        self.dtype = dtype
        self.spec = types.SimpleNamespace(stages=stages, seed=3, evaluation=types.SimpleNamespace(protocols=[]))
        self.resolved = {"name": "maml-toy"}
        self.samples = {"train": train, "valid": []}
        self.batches_served = 0
        self.on_batch = None  # callable(count): simulates a kill

    def task_samples(self, split: str, task: str) -> list[Point]:
        return list(self.samples[split])

    def batches(self, samples: list[Point], batch_size: int, *, shuffle: bool, seed: int, group_by_length=False):
        order = list(samples)
        if shuffle:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), batch_size):
            self.batches_served += 1
            if self.on_batch is not None:
                self.on_batch(self.batches_served)
            yield collate(order[start:start + batch_size], self.dtype)

    def build(self, kind: str, node: dict, path: str) -> Any:
        from crs.plugin_manager import get_plugin_manager
        from crs.registry import Registry

        return Registry.from_plugin_manager(get_plugin_manager()).build(kind, node, path, BuildDeps(path=path))


def stage(strategy: dict | None = None, **overrides) -> StageSpec:
    settings = dict(name="meta", objectives={"mse": 1.0}, train=["*"], epochs=1, batch_size=POINTS * 2,
                    optimizer=OptimizerSpec(type="adam", lr=0.03), schedule=ScheduleSpec(type="constant"),
                    validate=False, strategy={"type": "maml", "inner_lr": INNER_LR, "outer_only": ["features.*"],
                                              **(strategy or {})})
    settings.update(overrides)
    return StageSpec(**settings)


def fit(stages: list[StageSpec], train: list[Point], run_dir: Path, **kwargs) -> MetaPipeline:
    pipeline = MetaPipeline(stages, train, **kwargs)
    Trainer(pipeline, run_dir, progress=False, tensorboard=False).fit()
    return pipeline


def halves(points: list[Point]) -> list[tuple[list[Point], list[Point]]]:
    """Each user's first two conversations as support, the other two as query (the meta-test split)."""
    by_user: dict[int, list[Point]] = {}
    for p in points:
        by_user.setdefault(p.user_index, []).append(p)
    half = CONVERSATIONS // 2 * POINTS
    return [(pts[:half], pts[half:]) for _, pts in sorted(by_user.items())]


def query_mse(model: Any, tasks: list[tuple[list[Point], list[Point]]], adapt_steps: int) -> float:
    """Mean query MSE after `adapt_steps` inner steps of `head.*` on each user's support."""
    inner = meta.select_params(meta.named_parameters(model), ["head.*"])
    errors = []
    with torch.enable_grad():
        for support, query in tasks:
            batch = collate(support)
            fast, _ = meta.adapt(lambda p: meta.functional_compute(model, p, batch, ["loss.mse"])["loss.mse"],
                                 inner, steps=adapt_steps, lr=INNER_LR, first_order=True)
            loss = meta.functional_compute(model, fast, collate(query), ["loss.mse"])["loss.mse"]
            errors.append(float(loss.detach()))
    return sum(errors) / len(errors)


# ------------------------------------------------------------------ learning
TRAIN = user_points(60, seed=11)
TEST_TASKS = halves(user_points(60, seed=12, first_user=1000))
LEARNING = OptimizerSpec(type="adam", lr=0.1)


@pytest.fixture(scope="module")
def pooled_query_mse(tmp_path_factory) -> float:
    """Pooled (plain) training, as many optimizer steps as MAML takes, then the same one adaptation step."""
    plain = stage(epochs=4, batch_size=40, optimizer=LEARNING)
    plain.strategy = {"type": "plain"}
    pipeline = fit([plain], TRAIN, tmp_path_factory.mktemp("pooled"))  # 1200 points / 40 * 4 = 120 steps
    return query_mse(pipeline.model, TEST_TASKS, 1)


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_beats_pooled_training_on_a_task_family(tmp_path, first_order, pooled_query_mse):
    before = make_model(seed=1)
    # 60 users / 3 per meta-batch * 6 epochs = 120 outer steps
    maml = fit([stage({"meta_batch_users": 3, "first_order": first_order}, epochs=6, optimizer=LEARNING)], TRAIN,
               tmp_path).model
    adapted, unadapted = query_mse(maml, TEST_TASKS, 1), query_mse(maml, TEST_TASKS, 0)
    print(f"query MSE ({'first' if first_order else 'second'} order): MAML {adapted:.3f}, "
          f"unadapted {unadapted:.3f}, pooled + 1 step {pooled_query_mse:.3f}")
    assert adapted <= 0.5 * pooled_query_mse
    assert adapted <= 0.5 * unadapted
    # the outer step trains the outer-only W too
    assert not torch.equal(maml.slots["features"].W.weight, before.slots["features"].W.weight)


# ------------------------------------------------------------------ gradients
SGD_1 = OptimizerSpec(type="sgd", lr=1.0)  # one step of lr 1 without clipping: parameter change = -gradient


def one_outer_gradient(tmp_path: Path, strategy: dict, points: list[Point], **stage_overrides
                       ) -> tuple[MetaPipeline, dict[str, torch.Tensor]]:
    """The gradient of one outer step over all users (float64), read off an SGD step of lr 1."""
    users = len({p.user_index for p in points})
    pipeline = MetaPipeline([stage({"meta_batch_users": users, **strategy}, optimizer=SGD_1, **stage_overrides)],
                            points, dtype=torch.float64)
    before = {k: v.detach().clone() for k, v in meta.named_parameters(pipeline.model).items()}
    Trainer(pipeline, tmp_path, progress=False, tensorboard=False).fit()
    after = meta.named_parameters(pipeline.model)
    return pipeline, {name: before[name] - after[name].detach() for name in before}


def test_second_order_meta_gradient_matches_finite_differences(tmp_path):
    points = user_points(3, seed=21)
    # batch_size 3: every support and query side of 10 points is cut into chunks of 3, 3, 3, 1
    pipeline, grads = one_outer_gradient(tmp_path, {"split": "ordered"}, points, batch_size=3)
    model = make_model(seed=1, dtype=torch.float64)  # the initial parameters again
    params = meta.named_parameters(model)

    def meta_loss(p: dict) -> torch.Tensor:  # Algorithm 1, whole sides at once
        total = torch.zeros((), dtype=torch.float64)
        for support, query in halves(points):
            loss_s = meta.functional_compute(model, p, collate(support, torch.float64), ["loss.mse"])["loss.mse"]
            fast = meta.inner_update(loss_s, {"head.v": p["head.v"]}, INNER_LR, first_order=False)
            loss_q = meta.functional_compute(model, {**p, **fast}, collate(query, torch.float64),
                                             ["loss.mse"])["loss.mse"]
            total = total + loss_q + loss_s
        return total / len(halves(points))

    eps = 1e-6
    for name, param in params.items():
        for index in range(param.numel()):
            bump = torch.zeros(param.numel(), dtype=torch.float64)
            bump[index] = eps
            bump = bump.view_as(param)
            up = meta_loss({**params, name: (param + bump).detach().requires_grad_(True)})
            down = meta_loss({**params, name: (param - bump).detach().requires_grad_(True)})
            numeric = float((up - down).detach()) / (2 * eps)
            assert float(grads[name].reshape(-1)[index]) == pytest.approx(numeric, rel=1e-6, abs=1e-9), name
    # the second-order term is there: the first-order gradient of W differs
    _, first = one_outer_gradient(tmp_path / "fo", {"split": "ordered", "first_order": True}, points, batch_size=3)
    assert not torch.allclose(first["features.W.weight"], grads["features.W.weight"])


def test_first_order_query_loss_gradient_is_the_query_gradient_at_the_fast_weights(tmp_path):
    points = user_points(3, seed=22)
    _, grads = one_outer_gradient(tmp_path, {"split": "ordered", "first_order": True, "outer_loss": "query"}, points)
    model = make_model(seed=1, dtype=torch.float64)
    params = meta.named_parameters(model)
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for support, query in halves(points):
        loss_s = meta.functional_compute(model, params, collate(support, torch.float64), ["loss.mse"])["loss.mse"]
        (g,) = torch.autograd.grad(loss_s, [params["head.v"]])
        phi = {"head.v": (params["head.v"] - INNER_LR * g).detach().requires_grad_(True),
               "features.W.weight": params["features.W.weight"].detach().requires_grad_(True)}
        loss_q = meta.functional_compute(model, phi, collate(query, torch.float64), ["loss.mse"])["loss.mse"]
        for name, grad in zip(phi, torch.autograd.grad(loss_q, list(phi.values()))):
            expected[name] += grad / 3
    for name in params:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-9, atol=1e-12)


def test_outer_only_parameters_are_never_adapted_but_trained_by_the_outer_step(tmp_path, monkeypatch):
    adapted: list[set[str]] = []
    real = meta.inner_update

    def spy(loss, params, lr, first_order):
        fast = real(loss, params, lr, first_order)
        adapted.append({name for name in fast if fast[name] is not params[name]})
        return fast

    monkeypatch.setattr(meta, "inner_update", spy)
    points = user_points(4, seed=23)
    initial = make_model(seed=1)
    trained = fit([stage({"meta_batch_users": 2})], points, tmp_path / "all").model
    assert adapted and all(names == {"head.v"} for names in adapted)  # W is never in the fast weights
    assert not torch.equal(trained.slots["features"].W.weight, initial.slots["features"].W.weight)
    # a frozen slot is trained by neither step
    frozen = fit([stage({"meta_batch_users": 2}, train=["head"])], points, tmp_path / "head").model
    assert torch.equal(frozen.slots["features"].W.weight, initial.slots["features"].W.weight)
    assert not torch.equal(frozen.slots["head"].v, initial.slots["head"].v)


def test_draws_are_re_drawn_each_epoch_and_seeded(tmp_path):
    from crs.plugins.training.maml import MAMLConfig, MAMLStrategy

    strategy = MAMLStrategy(MAMLConfig(), BuildDeps(path="stages.0.strategy"))
    points = user_points(5, seed=24)
    draws = [[tuple(t.conversations) for t in strategy.tasks(points, seed)] for seed in (1, 2, 1)]
    assert draws[0] == draws[2] and draws[0] != draws[1]
    assert all(len(t.support) == len(t.query) == 2 * POINTS for t in strategy.tasks(points, 1))


# ------------------------------------------------------------------ resume
def test_a_killed_and_resumed_run_is_bitwise_identical(tmp_path):
    def stages():  # 8 users / 3 per meta-batch: 3 outer steps per epoch, 3 epochs, Adam + a schedule
        return [stage({"meta_batch_users": 3}, epochs=3, batch_size=4,
                      schedule=ScheduleSpec(type="linear", warmup_steps=2))]

    points = user_points(8, seed=25)
    whole = fit(stages(), points, tmp_path / "whole")
    killed = MetaPipeline(stages(), points)
    per_epoch = whole.batches_served // 3

    def die(count: int) -> None:
        if count == per_epoch + per_epoch // 2:  # half-way through the second epoch
            raise SimulatedKill()

    killed.on_batch = die
    with pytest.raises(SimulatedKill):
        Trainer(killed, tmp_path / "resumed", progress=False, tensorboard=False).fit()
    resumed = MetaPipeline(stages(), points)
    Trainer(resumed, tmp_path / "resumed", resume=True, progress=False, tensorboard=False).fit()
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    for name in ("history.json", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert len(history["meta"]) == 3 and "support" in history["meta"][0]["train"]


# ------------------------------------------------------------------ bad input
def _plain_then_maml(strategy: dict | None = None) -> list[StageSpec]:
    first = stage(name="warmup")
    first.strategy = {"type": "plain"}
    return [first, stage(strategy, name="meta")]


def test_a_corpus_without_user_ids_is_refused_before_any_stage_trains(tmp_path):
    points = [Point(p.conv_id, 0, p.turn_index, p.x, p.y) for p in user_points(3, seed=26)]
    with pytest.raises(ConfigError) as caught:
        fit(_plain_then_maml(), points, tmp_path)
    err = caught.value
    assert err.path == "stages.1.strategy.task_unit"
    assert "none of the 12 train conversations has one (12 without a user id)" in str(err)
    assert "task_unit: conversation" in err.fix and "without adaptation" in err.fix
    assert not (tmp_path / "checkpoint.pt").exists()  # the plain stage before it did not train
    # the fix works: every conversation is a task, split by its turns
    fixed = fit(_plain_then_maml({"task_unit": "conversation"}), points, tmp_path / "fixed")
    assert json.loads((tmp_path / "fixed" / "history.json").read_text())["meta"][0]["train"]["support"] > 0
    assert fixed.model is not None


def test_users_with_one_conversation_each_are_refused_with_the_counts(tmp_path):
    points = user_points(5, seed=27, conversations=1)
    with pytest.raises(ConfigError) as caught:
        fit([stage()], points, tmp_path)
    assert caught.value.path == "stages.0.strategy.task_unit"
    assert "the 5 train conversations belong to 5 users, none with 2 or more" in str(caught.value)
    assert "task_unit: conversation" in caught.value.fix


@pytest.mark.parametrize("key, value", [("inner_lr", 0), ("inner_steps", 0), ("meta_batch_users", 0),
                                        ("inner", []), ("outer_loss", "both"), ("split", "halves")])
def test_bad_settings_name_their_key(tmp_path, key, value):
    with pytest.raises(ConfigError) as caught:
        fit([stage({key: value})], user_points(2, seed=28), tmp_path)
    assert caught.value.path.startswith(f"stages.0.strategy.{key}")


def test_inner_patterns_must_select_a_trained_parameter(tmp_path):
    with pytest.raises(ConfigError, match="matches no parameter"):
        fit([stage({"inner": ["heads.*"]})], user_points(2, seed=29), tmp_path / "typo")
    with pytest.raises(ConfigError, match="none of the parameters `inner` selects is trained") as caught:
        fit([stage({"inner": ["features.*"], "outer_only": []}, train=["head"])], user_points(2, seed=29),
            tmp_path / "frozen")
    assert caught.value.path == "stages.0.strategy.inner"


# ------------------------------------------------------------------ R-GCN second order
def test_segmented_matmul_has_a_second_derivative_matching_plain_matmuls():
    from crs.plugins.kgsf.rgcn import segmented_matmul

    gen = torch.Generator().manual_seed(0)
    sizes = [3, 0, 2, 4]
    rows = torch.randn(9, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    weights = torch.randn(4, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def reference(r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([part @ w[i] for i, part in enumerate(r.split(sizes))])

    probe = torch.randn(9, 3, dtype=torch.float64, generator=gen)
    for fn in (segmented_matmul, None):
        out = segmented_matmul(rows, weights, sizes) if fn else reference(rows, weights)
        grads = torch.autograd.grad((out * probe).sum().sin(), [rows, weights], create_graph=True)
        second = torch.autograd.grad(sum((g ** 2).sum() for g in grads), [rows, weights])
        if fn:
            ours = (out, grads, second)
        else:
            torch.testing.assert_close(ours[0], out)
            for a, b in zip((*ours[1], *ours[2]), (*grads, *second)):
                torch.testing.assert_close(a, b)
    assert torch.autograd.gradgradcheck(lambda r, w: segmented_matmul(r, w, sizes), (rows, weights))


def test_an_rgcn_layer_is_twice_differentiable():
    """Second-order MAML through R-GCN: DGL's SpMM and the segmented matmul both have a double backward."""
    import numpy as np

    from crs.compat.dgl import bipartite_from_edges
    from crs.plugins.kgsf.rgcn import BasisRelationalLayer, relation_pairs

    torch.manual_seed(0)
    nodes, relations = 6, 3
    pairs = relation_pairs(np.array([0, 1, 2, 3, 4, 5, 0, 2]), np.array([1, 2, 3, 4, 5, 0, 3, 5]),
                           np.array([0, 1, 2, 0, 1, 2, 1, 0]), nodes, relations)
    graph = bipartite_from_edges(torch.from_numpy(pairs.edge_src), torch.from_numpy(pairs.edge_pair), nodes,
                                 len(pairs.pair_dst))
    layer = BasisRelationalLayer(4, 4, relations, 2).double()
    weight = torch.from_numpy(pairs.edge_weight).double().unsqueeze(-1)

    def run(h, bases, coefficients, root):
        params = {"bases": bases, "coefficients": coefficients, "root": root}
        return torch.func.functional_call(layer, params, (h, graph, weight, torch.from_numpy(pairs.pair_dst),
                                                          pairs.pairs_per_relation.tolist()))

    inputs = (torch.randn(nodes, 4, dtype=torch.float64, requires_grad=True),
              *(p.detach().clone().requires_grad_(True) for p in (layer.bases, layer.coefficients, layer.root)))
    assert torch.autograd.gradgradcheck(run, inputs)


def test_accumulating_meta_batches_is_one_larger_meta_batch(tmp_path):
    """`accumulate: 2` over meta-batches of one user steps like meta-batches of two users (mean gradient)."""
    points = user_points(4, seed=30)
    whole = fit([stage({"meta_batch_users": 2, "split": "ordered"}, optimizer=SGD_1)], points, tmp_path / "two",
                dtype=torch.float64)
    halves_ = fit([stage({"meta_batch_users": 1, "split": "ordered"}, optimizer=SGD_1, accumulate=2)], points,
                  tmp_path / "one", dtype=torch.float64)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(halves_.model.state_dict()[name], value, rtol=1e-12, atol=1e-12)
    from crs.plugins.training.maml import MAMLConfig, MAMLStrategy
    from crs.training.stage import plan_stage

    strategy = MAMLStrategy(MAMLConfig(meta_batch_users=1), BuildDeps(path="s"))
    plan = plan_stage(halves_, stage({"meta_batch_users": 1}, accumulate=2), 0)
    assert strategy.steps_per_epoch(plan) == 2  # 4 meta-batches, an optimizer step every 2


# ------------------------------------------------------------------ attention, precision
class AttendedFeatures(ModelComponent):
    """softmax attention of the batch's points over each other (F.scaled_dot_product_attention), then a sum."""

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        self.W = torch.nn.Linear(D, D, bias=False)

    def input_ports(self) -> dict[str, Port]:
        return {"x": Port("batch.x")}

    def output_ports(self) -> dict[str, Port]:
        return {"h": Port("features", 1)}

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        keys = self.W(inputs["x"])[None, None]  # (1, 1, B, D): one head, one sequence of the batch's points
        attended = torch.nn.functional.scaled_dot_product_attention(keys, keys, keys)
        return {"h": (attended[0, 0] * inputs["x"]).sum(-1)}


def attention_model() -> PipelineModel:
    torch.manual_seed(1)
    deps = BuildDeps(path="model")
    slots = {"features": AttendedFeatures(None, deps), "head": make_model(seed=1).slots["head"]}
    return PipelineModel(slots, wire(slots, {}, BATCH_KEYS | {"batch.x", "batch.y"}))


def test_second_order_through_attention_uses_the_math_kernel(tmp_path):
    """The fused CPU attention kernel has no double backward; the strategy's second-order passes avoid it."""
    points = user_points(2, seed=31)
    before = {k: v.clone() for k, v in attention_model().state_dict().items()}
    pipeline = fit([stage({"meta_batch_users": 2, "outer_only": []})], points, tmp_path, model=attention_model())
    after = pipeline.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(after["slots.features.W.weight"], before["slots.features.W.weight"])
    # without the math kernel, the same second-order gradient fails on the CPU
    model, (support, _) = attention_model(), halves(points)[0]
    params = meta.named_parameters(model)
    loss = meta.functional_compute(model, params, collate(support), ["loss.mse"])["loss.mse"]
    fast = meta.inner_update(loss, params, INNER_LR, first_order=False)
    with pytest.raises(RuntimeError, match="derivative for .*scaled_dot_product"):
        torch.autograd.grad(fast["features.W.weight"].sum(), [params["features.W.weight"]])


def test_second_order_maml_trains_under_bf16_autocast(tmp_path):
    points = user_points(4, seed=32)
    initial = make_model(seed=1)
    trained = fit([stage({"meta_batch_users": 2}, precision="bf16")], points, tmp_path).model
    weights = trained.slots["features"].W.weight
    assert torch.isfinite(weights).all() and weights.dtype == torch.float32
    assert not torch.equal(weights, initial.slots["features"].W.weight)
