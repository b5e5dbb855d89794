"""PipelineModel: functional forward, the honest cache of batch-independent slots, recommend/generate."""
from __future__ import annotations

import pytest
import torch
from adapt_toys import ToyGen, make_model, make_pipeline, user_samples

from crs.errors import ConfigError, WiringError
from crs.evaluation import evaluate
from crs.interfaces import Port
from crs.pipeline.model import PipelineModel
from crs.pipeline.wiring import wire
from crs.training import meta


def batches(deps, size=3):
    from crs.data.batching import iterate_batches

    rec = [s.for_item(s.target_items[0]) for s in user_samples(deps.vocab)[:2 * size]]
    return list(iterate_batches(rec, size, shuffle=False, seed=0))


def scores(model, batch):
    return model.compute(batch, ["scores"])["scores"]


def test_graph_runs_once_while_parameters_stay_and_again_whenever_they_change():
    model, deps = make_model()
    graph = model.slots["graph"]
    first, second = batches(deps)
    model.eval()
    with torch.no_grad():
        before = scores(model, first)
        scores(model, second)
        assert graph.runs == 1  # cached across batches
        # an optimizer step changes the parameters in place (no train()/eval() in between)
        optimizer = torch.optim.Adam(graph.parameters(), lr=0.5)
        graph.table.grad = torch.ones_like(graph.table)
        optimizer.step()
        after_step = scores(model, first)
        assert graph.runs == 2 and not torch.allclose(after_step, before)
        scores(model, second)
        assert graph.runs == 2
        # load_state_dict copies into the same tensors: the version counter tells
        model.load_state_dict({k: v.clone() + 1 for k, v in model.state_dict().items()})
        reloaded = scores(model, first)
        assert graph.runs == 3 and not torch.allclose(reloaded, after_step)
        graph.table.mul_(0.5)  # any in-place edit
        scores(model, first)
        assert graph.runs == 4


def test_adapting_parameters_between_two_evaluations_changes_the_cached_graph_outputs():
    model, deps = make_model(generator=False)
    pipeline = make_pipeline(model, deps, user_samples(deps.vocab), batch_size=2)
    graph = model.slots["graph"]
    first = evaluate(pipeline, "test")
    runs = graph.runs
    assert runs == 1  # one run for the whole evaluation (10 batches)
    with torch.no_grad():
        graph.table.add_(torch.randn(graph.table.shape, generator=torch.Generator().manual_seed(1)) * 2)
    second = evaluate(pipeline, "test")
    assert graph.runs == 2
    assert [r["top"] for r in first.rankings["crslab-v1"]] != [r["top"] for r in second.rankings["crslab-v1"]]


def test_frozen_graph_is_cached_in_training_and_trainable_one_is_not():
    model, deps = make_model()
    graph = model.slots["graph"]
    first, second = batches(deps)
    model.train()
    graph.table.requires_grad_(False)  # a stage that reads the graph but does not train it
    loss = model.compute(first, ["loss.rec"])["loss.rec"] + model.compute(second, ["loss.rec"])["loss.rec"]
    loss.backward()
    assert graph.runs == 1 and model.slots["rec"].query.grad is not None
    graph.table.requires_grad_(True)
    model.compute(first, ["loss.rec"])
    model.compute(first, ["loss.rec"])
    assert graph.runs == 3  # gradients must flow through it: never shared between batches


def test_functional_call_with_other_params_differs_and_leaves_the_real_cache_alone():
    model, deps = make_model()
    graph = model.slots["graph"]
    batch = batches(deps)[0]
    model.eval()
    with torch.no_grad():
        own = scores(model, batch)
        other = {"slots.graph.table": torch.randn_like(graph.table)}
        swapped = torch.func.functional_call(model, other, (batch, ["scores"]))["scores"]
        assert graph.runs == 2 and not torch.allclose(swapped, own)
        # the same through crs.training.meta (public names), again not served from any cache
        again = meta.functional_compute(model, {"graph.table": other["slots.graph.table"]}, batch, ["scores"])
        assert graph.runs == 3 and torch.equal(again["scores"], swapped)
        # the real parameters' entry survived both functional passes
        torch.testing.assert_close(scores(model, batch), own)
        assert graph.runs == 3
        # functional_call with the model's own tensors is the plain forward
        same = torch.func.functional_call(model, dict(model.named_parameters()), (batch, ["scores"]))["scores"]
        assert torch.equal(same, own)
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())


def test_functional_pass_of_a_trainable_slot_under_grad_is_differentiable():
    model, deps = make_model()
    batch = batches(deps)[0]
    model.eval()
    table = model.slots["graph"].table.detach().clone().requires_grad_(True)
    loss = meta.functional_compute(model, {"graph.table": table}, batch, ["loss.rec"])["loss.rec"]
    (grad,) = torch.autograd.grad(loss, [table])
    assert grad.abs().sum() > 0


def test_recommend_is_the_top_k_of_the_scores():
    model, deps = make_model()
    batch = batches(deps)[0]
    model.eval()
    with torch.no_grad():
        top = model.recommend(batch, 2)
        assert top.dtype == torch.long and top.shape == (3, 2)
        assert torch.equal(top, scores(model, batch).topk(2, dim=1).indices)
        assert model.recommend(batch, 50).shape == (3, 5)  # never more than there are items
    with pytest.raises(ConfigError, match="k >= 1"):
        model.recommend(batch, 0)


def test_generator_gets_a_recommend_callable_computed_with_the_same_parameters():
    model, deps = make_model(text=True)
    generator = model.slots["generator"]
    batch = batches(deps)[0]
    model.eval()
    with torch.no_grad():
        texts = model.generate_text(batch, 5)
        own = model.recommend(batch, 2)
        assert torch.equal(generator.asked, own)
        assert texts == [f"You might LIKE @item{int(i)}!" for i in own[:, 0]]
        other = {"graph.table": model.slots["graph"].table.flip(0)}  # items' vectors swapped around
        adapted = meta.functional_compute(model, other, batch, [], generate_len=5, as_text=True)
        expected = meta.functional_compute(model, other, batch, ["scores"])["scores"].topk(2, dim=1).indices
        assert torch.equal(generator.asked, expected) and not torch.equal(expected, own)
        assert adapted["generated.text"] == [f"You might LIKE @item{int(i)}!" for i in expected[:, 0]]
    assert model.generates_text and model.nll_unit == "subtoken"
    plain, _ = make_model()
    assert not plain.generates_text and plain.nll_unit == "word"
    with pytest.raises(ConfigError, match="generate_text"):
        plain.generate_text(batch, 5)
    assert plain.generate(batch, 4).shape == (3, 4)


def test_recommend_is_a_reserved_generator_input():
    class Greedy(ToyGen):
        def input_ports(self):
            return {**super().input_ports(), "recommend": Port("scores", optional=True)}

    model, deps = make_model()
    slots = {**model.slots, "generator": Greedy(None, deps)}
    with pytest.raises(WiringError, match="reserved"):
        PipelineModel(slots, wire(slots, {}))
