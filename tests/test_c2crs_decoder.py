"""`c2crs_decoder` (crs.plugins.c2crs.decoder): instance weights and the weighted loss against hand
computation, review fusion (hs_copy2) against its formula, greedy decoding of an overfit model, and the
conversation stage of C2-CRS on the demo corpus leaving the frozen encoders bit-identical."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from crs.data.vocab import Vocabulary
from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.c2crs.decoder import C2CRSDecoder, instance_weights

WORDS = "i like sci fi movies have you seen @101 it is great what about comedy sure try @202 thanks".split()
# train counts: "i" 3000 (above beta 1500: weight 0.5), "it" 100000 (below gamma: 0.02), "is" 1000 (weight 1)
COUNTS = {"i": 3000, "it": 100_000, "is": 1000, "great": 1500}
DIM, ENTITY_DIM, REVIEW_DIM, NODES = 16, 8, 12, 7
CONTEXTS = ["i like sci fi movies", "what about comedy", "have you seen @101"]
RESPONSES = ["have you seen @101", "sure try @202", "it is great"]


def entity_graph() -> IndexedGraph:
    kg = KnowledgeGraph(ENTITY, [f"n{i}" for i in range(NODES - 1)], ["r0"], [0, 1], [0, 0], [1, 2])
    return IndexedGraph.from_graph("entity_kg", kg)


def make_decoder(**overrides) -> tuple[C2CRSDecoder, Vocabulary]:
    vocab = Vocabulary(WORDS, COUNTS)
    node = {"dim": DIM, "heads": 2, "layers": 1, "ffn_dim": 32, "dropout": 0.0, "entity_dim": ENTITY_DIM,
            "review_dim": REVIEW_DIM, **overrides}
    deps = BuildDeps(path="model.generator", vocab=vocab, graphs={"entity_kg": entity_graph()})
    return C2CRSDecoder(C2CRSDecoder.Config(**node), deps), vocab


def make_inputs(vocab: Vocabulary, responses=RESPONSES, seed: int = 0) -> dict:
    """Port inputs of three samples: random (but fixed) context states, entities and reviews."""
    gen = torch.Generator().manual_seed(seed)
    width = max(len(r.split()) for r in responses) + 2
    response = torch.tensor([[vocab.bos, *vocab.encode(r), vocab.eos] + [0] * (width - len(r.split()) - 2)
                             for r in responses])
    tokens = torch.tensor([vocab.encode(c) + [0] * (5 - len(c.split())) for c in CONTEXTS[:len(responses)]])
    b = len(responses)
    return {
        "tokens": tokens, "tokens_mask": tokens != 0,
        "context_states": torch.randn(b, 5, DIM, generator=gen),
        "context_states_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]][:b]).bool(),
        "entity_nodes": torch.randn(NODES, ENTITY_DIM, generator=gen),
        "context_entities": torch.tensor([[1, 2], [3, 0], [0, 0]][:b]),
        "context_entities_mask": torch.tensor([[1, 1], [1, 0], [0, 0]][:b]).bool(),
        "review_states": torch.randn(b, 3, REVIEW_DIM, generator=gen),
        "review_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]][:b]).bool(),  # sample 3 has no review
        "response": response, "response_mask": response != 0,
    }


# ------------------------------------------------------------------ instance weighting
def test_instance_weights_follow_the_formula():
    alpha = instance_weights(torch.tensor([3000.0, 1e5, 1000.0, 1500.0, 0.0, 1501.0]), beta=1500, gamma=0.02)
    expected = [0.5, 0.02, 1.0, 1.0, 1.0, 1500 / 1501]  # f > beta only; 1500 / 1e5 = 0.015 < gamma
    assert alpha.tolist() == pytest.approx(expected, abs=1e-7)
    decoder, vocab = make_decoder(beta=1500, gamma=0.02)
    weights = {w: decoder.token_weights[vocab.index[w]].item() for w in ("i", "it", "is", "great", "comedy")}
    assert weights == pytest.approx({"i": 0.5, "it": 0.02, "is": 1.0, "great": 1.0, "comedy": 1.0})
    assert decoder.token_weights[vocab.eos] == 1.0  # special tokens have no count


def fixed_logits(vocab_size: int, steps: int) -> torch.Tensor:
    """Logits (T, V) that do not depend on the model: the same at every sample."""
    return torch.arange(steps * vocab_size, dtype=torch.float32).reshape(steps, vocab_size).mul(0.37).sin() * 3


@pytest.mark.parametrize("grad", [True, False])  # the training (target-only) and evaluation paths
def test_weighted_loss_equals_hand_computation_and_nll_sum_stays_unweighted(grad):
    decoder, vocab = make_decoder()
    inputs = make_inputs(vocab)
    targets = inputs["response"][:, 1:]
    logits = fixed_logits(len(vocab), targets.size(1))
    decoder.vocab_logits = lambda hidden, _inputs: logits.expand(hidden.size(0), -1, -1)[:, :hidden.size(1)]
    with torch.set_grad_enabled(grad):
        out = decoder(inputs)
    weight_of = {vocab.index["i"]: 0.5, vocab.index["it"]: 0.02}
    weighted = plain = 0.0
    count = 0
    for row in targets.tolist():
        for t, token in enumerate(row):
            if token == 0:
                continue
            z = logits[t].tolist()
            nll = -(z[token] - math.log(sum(math.exp(v) for v in z)))
            plain += nll
            weighted += weight_of.get(token, 1.0) * nll
            count += 1
    assert "it" in RESPONSES[2].split()  # a down-weighted target is in the batch
    assert out["nll_count"].item() == count
    assert out["nll_sum"].item() == pytest.approx(plain, rel=1e-5)
    assert out["loss.gen"].item() == pytest.approx(weighted / count, rel=1e-5)
    assert weighted < plain - 1e-3  # the weights did something

    unweighted, _ = make_decoder(weighting=False)
    unweighted.vocab_logits = decoder.vocab_logits
    with torch.set_grad_enabled(grad):
        assert unweighted(inputs)["loss.gen"].item() == pytest.approx(plain / count, rel=1e-5)


# ------------------------------------------------------------------ review fusion
def test_review_fusion_is_hs_copy2_and_attends_to_the_aligned_review():
    decoder, vocab = make_decoder()
    inputs = make_inputs(vocab)
    memories = decoder.encode(inputs)
    hidden = torch.randn(3, 2, DIM, generator=torch.Generator().manual_seed(1))
    # sample 0's first (projected) review is aligned with its first decoder state, the second opposed to it
    aligned = hidden[0, 0] * 2.0
    reviews = memories["reviews"][0].detach().clone()
    reviews[0, 0], reviews[0, 1] = aligned, -aligned
    memories["reviews"] = (reviews, memories["reviews"][1])
    attention = decoder.review_attention(hidden, memories)
    assert attention[0, 0, 0] > 0.99 and attention[0, 0, 2] == 0  # aligned review wins; masked one gets nothing
    assert torch.equal(attention[2], torch.zeros(2, 3))  # no review at all: no attention, not NaN
    fused = decoder.fuse_reviews(hidden, memories)
    for b in range(3):
        for t in range(2):
            h = hidden[b, t].double()
            r = reviews[b].double()
            real = inputs["review_mask"][b]
            summary = torch.zeros(DIM, dtype=torch.float64)
            if real.any():
                scores = np.array([float(h @ r[k]) for k in range(3) if real[k]])
                weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
                summary = sum(w * r[k] for w, k in zip(weights, [k for k in range(3) if real[k]]))
            expected = decoder.fusion.weight.double() @ torch.cat([h, summary]) + decoder.fusion.bias.double()
            torch.testing.assert_close(fused[b, t].double(), expected, atol=1e-5, rtol=1e-5)


def test_reviews_change_the_logits_only_with_review_fusion():
    decoder, vocab = make_decoder()
    inputs = make_inputs(vocab)
    other = dict(inputs, review_states=inputs["review_states"].flip(1) * 3)
    with torch.no_grad():
        a, b = decoder(inputs)["logits"], decoder(other)["logits"]
    assert (a[0] - b[0]).abs().max() > 1e-3  # sample 0 has reviews: they matter
    assert torch.equal(a[2], b[2])  # sample 2 has none: masked reviews change nothing
    assert torch.isfinite(a).all()

    torch.manual_seed(0)
    plain, _ = make_decoder(review_fusion=False)
    assert "review_states" not in plain.input_ports() and plain.fusion is None
    assert plain.memory_sources() == ("encoder", "entities")
    with torch.no_grad():
        p = plain(inputs)["logits"]
        assert torch.equal(p, plain(other)["logits"])
        hidden = plain.decoder(inputs["response"][:, :-1], plain.encode(inputs))
        assert torch.allclose(p, F.log_softmax(hidden @ plain.embedding.weight.t(), -1), atol=1e-6)


def test_missing_review_port_means_no_reviews():
    decoder, vocab = make_decoder()
    inputs = make_inputs(vocab)
    without = {k: v for k, v in inputs.items() if not k.startswith("review")}
    masked = dict(inputs, review_mask=torch.zeros(3, 3, dtype=torch.bool))
    with torch.no_grad():  # an absent review encoder and a batch whose items have no text read the same
        torch.testing.assert_close(decoder(without)["logits"], decoder(masked)["logits"], atol=1e-6, rtol=0)


def test_context_states_come_from_the_port_and_entities_are_attended():
    decoder, vocab = make_decoder()
    assert decoder.encoder is None  # no encoder of its own
    assert decoder.input_ports()["context_states"].key == "context_states"
    assert decoder.input_ports()["context_states"].dim == DIM
    inputs = make_inputs(vocab)
    with torch.no_grad():
        base = decoder(inputs)["logits"]
        shifted = decoder(dict(inputs, context_states=inputs["context_states"] + 1.0))["logits"]
        nodes = decoder(dict(inputs, entity_nodes=inputs["entity_nodes"].roll(1, 0)))["logits"]
    assert (base - shifted).abs().max() > 1e-3
    assert (base[:2] - nodes[:2]).abs().max() > 1e-3 and torch.equal(base[2], nodes[2])  # sample 2: no entities


def test_bad_config_is_a_config_error_with_its_path():
    with pytest.raises(ConfigError, match="model.generator.beta"):
        make_decoder(beta=0)
    with pytest.raises(ConfigError, match="model.generator.gamma"):
        make_decoder(gamma=0)
    with pytest.raises(ConfigError, match="model.generator.entity_graph"):
        make_decoder(entity_graph="nope")
    decoder, vocab = make_decoder()
    inputs = make_inputs(vocab)
    with pytest.raises(ConfigError, match="model.generator.inputs.entity_nodes"):
        decoder(dict(inputs, entity_nodes=inputs["entity_nodes"][:3]))


# ------------------------------------------------------------------ greedy decoding
def test_greedy_generation_reproduces_an_overfit_batch():
    torch.manual_seed(0)
    decoder, vocab = make_decoder(share_embeddings=False)
    inputs = make_inputs(vocab)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-2)
    first = decoder(inputs)["loss.gen"].item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = decoder(inputs)["loss.gen"]
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 < first
    decoder.eval()
    prompt = {k: v for k, v in inputs.items() if not k.startswith("response")}
    out = decoder.generate(prompt, max_len=10)
    assert [vocab.decode(row) for row in out.tolist()] == [r.split() for r in RESPONSES]
    assert out.size(1) == max(len(r.split()) for r in RESPONSES) + 1  # stops once every row has its EOS


# ------------------------------------------------------------------ the conversation stage on demo
@pytest.mark.slow
def test_conv_stage_leaves_the_frozen_encoders_bit_identical(tmp_path):
    from crs.config.loader import load_config
    from crs.pipeline import build_pipeline
    from crs.plugin_manager import get_plugin_manager
    from crs.registry import Registry
    from crs.training import Trainer

    registry = Registry.from_plugin_manager(get_plugin_manager())
    run_file = tmp_path / "run.yaml"
    small = {"dim": 32, "heads": 2, "layers": 1, "ffn_dim": 32}  # the preset's 300-d model is 30x slower
    run_file.write_text(yaml.safe_dump({
        "preset": "c2crs", "data": "demo", "run_dir": str(tmp_path / "run"),
        "samples": {"max_train_conversations": 40},
        "shared": {"tokens": {"type": "token_embedding", "dim": 32}},
        "model": {"context_encoder": small, "review_encoder": small,
                  "coarse": {"views": {"context": 32, "kg": 128, "review": 32}},
                  "fine": {"views": {"context": 32, "kg": 128, "review": 32}},
                  "generator": {"type": "c2crs_decoder", "embedding": "tokens", "review_dim": 32, **small}},
        "stages": [{"name": "conv", "task": "conv", "objectives": {"gen": 1.0}, "epochs": 1, "batch_size": 32,
                    "train": ["shared.tokens", "review_encoder", "generator"], "grad_clip": 0.1,
                    "optimizer": {"type": "adam", "lr": 0.001}, "validate": False}],
    }))
    spec, resolved = load_config(str(run_file), registry=registry)
    pipeline = build_pipeline(spec, registry, resolved)
    model = pipeline.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    Trainer(pipeline, tmp_path / "run", progress=False).fit()
    after = model.state_dict()
    frozen = ("slots.context_encoder.", "slots.entity_encoder.", "slots.entity_user.", "slots.recommender.")
    checked = [k for k in before if k.startswith(frozen)]
    assert any(k.startswith("slots.context_encoder.") for k in checked)
    assert any(k.startswith("slots.entity_encoder.") for k in checked)
    for key in checked:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["shared.tokens.weight"], after["shared.tokens.weight"])
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("slots.generator."))
