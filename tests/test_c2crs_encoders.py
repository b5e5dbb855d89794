"""C2-CRS's encoders (crs.plugins.c2crs): the context encoder's mentions (an `@item` token -> its node and its
state, after keep_last truncation), the review encoder's units (source fallback, textless items masked, empty rows
zero and never NaN, one encoding per item), one shared token matrix for both, a missing source as a config error;
and, on the demo corpus, that coarse pretraining aligns the context and KG views of a sample (spec §8)."""
from __future__ import annotations

import copy

import pytest
import torch

from crs.config.validate import from_dict
from crs.data.vocab import item_token
from crs.errors import ConfigError
from crs.knowledge import ItemTexts
from crs.nn.embedding import TokenEmbedding
from crs.plugins.c2crs.context import C2CRSContextEncoder
from crs.plugins.c2crs.review import C2CRSReviewEncoder
from crs.testing import make_tiny_deps

DIM = 8


def build(cls, deps, path: str, **config):
    torch.manual_seed(0)
    deps = copy.copy(deps)
    deps.path = path
    node = {"dim": DIM, "heads": 2, "layers": 1, "ffn_dim": 16, **config}
    return cls(from_dict(cls.Config, node, path), deps).eval()


@pytest.fixture
def deps():
    return make_tiny_deps("model")


def ids(deps, *tokens: str) -> list[int]:
    return [deps.vocab.index[t] for t in tokens]


def node_of(deps, item: int) -> int:
    return int(deps.items.entity_nodes[item])


# ---------------------------------------------------------------- mentions
def test_mentions_are_the_item_tokens_kept_by_truncation_with_their_nodes_and_states(deps):
    encoder = build(C2CRSContextEncoder, deps, "model.context_encoder", max_len=4)
    rows = [ids(deps, "i", item_token("item0"), "a", item_token("item2"), "you", item_token("item3")),  # 6 tokens
            ids(deps, item_token("item1"), "hi"),
            ids(deps, "i", "like", "movie")]
    tokens = torch.zeros(3, 6, dtype=torch.long)
    for r, row in enumerate(rows):
        tokens[r, :len(row)] = torch.tensor(row)
    out = encoder({"tokens": tokens, "tokens_mask": tokens != 0})
    # row 0 keeps its last 4 tokens [a, @item2, you, @item3]: @item0 is cut off with its token
    assert out["mention_nodes"].tolist() == [[node_of(deps, 2), node_of(deps, 3)], [node_of(deps, 1), 0], [0, 0]]
    assert out["mention_mask"].tolist() == [[True, True], [True, False], [False, False]]
    states = out["states"]
    assert states.shape[1] == 4
    assert torch.equal(out["mention_states"][0, 0], states[0, 1]) and torch.equal(out["mention_states"][0, 1],
                                                                                  states[0, 3])
    assert torch.equal(out["mention_states"][1, 0], states[1, 0])
    mentions = out["mention_states"].detach()
    assert float(mentions[1, 1].abs().sum()) == 0 and float(mentions[2].abs().sum()) == 0
    assert torch.isfinite(out["user"]).all()


def test_max_mentions_keeps_the_last_mentions_in_text_order(deps):
    encoder = build(C2CRSContextEncoder, deps, "model.context_encoder", max_mentions=2)
    row = ids(deps, item_token("item0"), "a", item_token("item1"), item_token("item2"), "you")
    out = encoder({"tokens": torch.tensor([row]), "tokens_mask": torch.ones(1, 5, dtype=torch.bool)})
    assert out["mention_nodes"].tolist() == [[node_of(deps, 1), node_of(deps, 2)]]
    assert torch.equal(out["mention_states"][0], out["states"][0, 2:4])


def test_the_token_node_table_maps_each_item_token_to_its_node_and_nothing_else(deps):
    encoder = build(C2CRSContextEncoder, deps, "model.context_encoder")
    table = encoder.token_nodes
    for item, item_id in enumerate(deps.items.ids):
        assert int(table[deps.vocab.index[item_token(item_id)]]) == node_of(deps, item)
    assert int((table > 0).sum()) == len(deps.items)


# ----------------------------------------------------------------- reviews
def with_texts(deps, reviews: dict, metadata: dict):
    deps = copy.copy(deps)
    deps.item_texts = {"reviews": ItemTexts("review", reviews), "metadata": ItemTexts("metadata", metadata)}
    return deps


def test_units_come_from_the_first_source_with_text_and_are_cut_to_max_tokens(deps):
    texts = with_texts(deps, {"item0": ["a scary space movie", "second review"], "item1": [""]},
                       {"item1": ["a funny movie"], "item2": ["heat . a movie"], "item0": ["never read"]})
    encoder = build(C2CRSReviewEncoder, texts, "model.review_encoder", sources=["reviews", "metadata"],
                    max_tokens=3)
    units = encoder.units[:, 0]
    assert units[0].tolist() == deps.vocab.encode("a scary space")  # review wins, first 3 tokens
    assert units[1].tolist() == deps.vocab.encode("a funny movie")  # blank review: the plot stands in
    assert units[2].tolist() == deps.vocab.encode("heat . a")
    assert units[3:].abs().sum() == 0  # items 3 and 4 have no text at all
    assert encoder.coverage == {"reviews": 1, "metadata": 2}
    reviews_only = build(C2CRSReviewEncoder, texts, "model.review_encoder", sources=["reviews"], max_tokens=3)
    assert reviews_only.units[1:].abs().sum() == 0 and reviews_only.coverage == {"reviews": 1}


def test_textless_items_are_masked_and_empty_rows_are_zero_never_nan(deps):
    texts = with_texts(deps, {"item0": ["a scary space movie"], "item2": ["i like heat"]}, {})
    encoder = build(C2CRSReviewEncoder, texts, "model.review_encoder", sources=["reviews", "metadata"])
    items = torch.tensor([[0, 1, 2], [1, 3, 0], [0, 0, 0], [2, 0, 0]])
    items_mask = torch.tensor([[True, True, True], [True, True, False], [False, False, False], [True, False, False]])
    out = encoder({"items": items, "items_mask": items_mask})
    assert out["mask"].tolist() == [[True, False, True], [False, False, False], [False, False, False],
                                    [True, False, False]]
    assert out["nodes"].tolist() == [[node_of(deps, 0), 0, node_of(deps, 2)], [0, 0, 0], [0, 0, 0],
                                     [node_of(deps, 2), 0, 0]]
    for value in out.values():
        assert not value.is_floating_point() or torch.isfinite(value).all()
    assert float(out["states"][~out["mask"]].detach().abs().sum()) == 0
    assert float(out["user"][1:3].detach().abs().sum()) == 0  # only textless items / none at all: the zero vector
    # one vector per item, whichever sample it is in, and it is the unit's pooled encoding
    assert torch.allclose(out["states"][0, 2], out["states"][3, 0], atol=1e-6)
    unit = encoder.units[2, :1]
    states, mask = encoder.encoder(unit, unit != 0)
    assert torch.allclose(out["states"][0, 2], encoder.token_pool(states, mask)[0], atol=1e-6)
    assert torch.allclose(out["user"][3], out["states"][3, 0], atol=1e-6)  # a single unit pools to itself


def test_max_units_keeps_the_last_context_items(deps):
    encoder = build(C2CRSReviewEncoder, deps, "model.review_encoder", max_units=2)
    out = encoder({"items": torch.tensor([[4, 0, 3]]), "items_mask": torch.ones(1, 3, dtype=torch.bool)})
    assert out["nodes"].tolist() == [[node_of(deps, 0), node_of(deps, 3)]]


def test_a_source_the_corpus_lacks_is_a_config_error_naming_the_key(deps):
    with pytest.raises(ConfigError) as err:
        build(C2CRSReviewEncoder, deps, "model.review_encoder", sources=["reviews", "imdb_reviews"])
    text = str(err.value)
    assert "model.review_encoder.sources.1" in text and "imdb_reviews" in text and "fix:" in text
    assert "metadata" in text and "reviews" in text  # the fix names what there is


def test_context_and_review_encoders_share_one_token_matrix(deps):
    shared = TokenEmbedding(from_dict(TokenEmbedding.Config, {"dim": DIM}, "shared.tokens"), deps)
    deps = copy.copy(deps)
    deps.shared = {"tokens": shared}
    context = build(C2CRSContextEncoder, deps, "model.context_encoder", embedding="tokens")
    review = build(C2CRSReviewEncoder, deps, "model.review_encoder", embedding="tokens")
    assert all(p is not shared.weight for p in [*context.parameters(), *review.parameters()])  # not owned twice
    tokens = torch.tensor([ids(deps, "i", "like", item_token("item0"))])
    out_c = context({"tokens": tokens, "tokens_mask": tokens != 0})
    out_r = review({"items": torch.tensor([[0]]), "items_mask": torch.ones(1, 1, dtype=torch.bool)})
    out_c["user"].sum().backward()
    from_context = shared.weight.grad.clone()
    shared.weight.grad = None
    out_r["user"].sum().backward()
    review_rows = set(review.units[0, 0][review.units[0, 0] > 0].tolist())
    assert set(from_context.abs().sum(1).nonzero().flatten().tolist()) == set(tokens[0].tolist())
    assert set(shared.weight.grad.abs().sum(1).nonzero().flatten().tolist()) == review_rows
    with pytest.raises(ConfigError, match="model.review_encoder.embedding"):
        build(C2CRSReviewEncoder, deps, "model.review_encoder", embedding="tokens", dim=2 * DIM)


# ------------------------------------------------------- demo pipeline
DEMO_SMALL = 32  # the preset's 300-d encoders are ~30x slower; the alignment does not depend on width


def demo_alignment_gap(pipeline, samples: list) -> float:
    """Mean cosine of a sample's projected e_C and e_G minus that of different samples' (samples with entities)."""
    model = pipeline.model
    model.eval()
    heads = model.slots["coarse"].heads
    with torch.no_grad():
        batch = next(pipeline.batches(samples, len(samples), shuffle=False, seed=0))
        state = model.compute(batch, ["user_context", "user_entity"])
        has = state["user_entity"].ne(0).any(-1)  # e_G of a context without entities is the zero vector
        zc = torch.nn.functional.normalize(heads["context"](state["user_context"][has]), dim=-1)
        zg = torch.nn.functional.normalize(heads["kg"](state["user_entity"][has]), dim=-1)
    sim = zc @ zg.t()
    assert len(sim) >= 100
    return float(sim.diagonal().mean() - sim[~torch.eye(len(sim), dtype=torch.bool)].mean())


@pytest.mark.slow  # about 40 s of CPU: 20 epochs of coarse pretraining on 150 demo conversations
def test_coarse_pretraining_on_the_demo_corpus_aligns_context_and_kg_views_of_a_sample(tmp_path):
    from crs.config.loader import load_config
    from crs.pipeline import build_pipeline
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry
    from crs.training.loop import weighted_objective
    from crs.training.optim import build_optimizer
    from crs.training.stage import plan_stage, train_only

    torch.manual_seed(0)
    small = [f"shared.tokens.dim={DEMO_SMALL}", f"model.coarse.views.context={DEMO_SMALL}",
             f"model.coarse.views.review={DEMO_SMALL}", f"model.fine.views.context={DEMO_SMALL}",
             f"model.fine.views.review={DEMO_SMALL}", "~model.generator", "~stages.3", "~stages.2", "~stages.1",
             *(f"model.{slot}.{key}={value}" for slot in ("context_encoder", "review_encoder")
               for key, value in (("dim", DEMO_SMALL), ("ffn_dim", DEMO_SMALL), ("layers", 1))),
             "samples.max_train_conversations=150", "stages.0.optimizer.lr=0.003", f"run_dir={tmp_path}"]
    registry = Registry.from_plugin_manager(get_plugin_manager())
    spec, resolved = load_config(None, ["preset=c2crs", "data=demo", *small], registry=registry)
    pipeline = build_pipeline(spec, registry, resolved)
    model, train = pipeline.model, pipeline.task_samples("train", "rec")
    valid = pipeline.task_samples("valid", "rec")[:256]
    before = demo_alignment_gap(pipeline, valid)
    plan = plan_stage(pipeline, spec.stages[0], 0)
    assert set(plan.objectives) == {"loss.coarse"}
    epoch_losses = []
    with train_only(model, plan.parameters):
        optimizer = build_optimizer(plan.spec.optimizer, plan.named_parameters, plan.path)
        for epoch in range(20):
            model.train()
            losses = []
            for batch in pipeline.batches(train, 32, shuffle=True, seed=epoch):
                total, _ = weighted_objective(model.compute(batch, plan.wanted), plan.objectives, plan.path)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                losses.append(total.item())
            epoch_losses.append(sum(losses) / len(losses))
    after = demo_alignment_gap(pipeline, valid)
    print(f"aligned-minus-random cosine (e_C, e_G) on valid: {before:.3f} -> {after:.3f}; "
          f"loss.coarse {epoch_losses[0]:.2f} -> {epoch_losses[-1]:.2f}")
    assert abs(before) < 0.05 and after > 0.3
    assert epoch_losses[-1] < 0.5 * epoch_losses[0]
