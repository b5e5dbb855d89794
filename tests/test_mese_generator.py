"""mese_generator after a tiny random mese_plm: loss.gen and nll equal a hand computation over one full causal pass
of D' (decision token included: [REC] on recommending turns, the first reply token otherwise), greedy decoding
over the cache equals greedy decoding by full passes, predicted vs gold item insertion, and [MOVIE_ID] filling."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crs.config.validate import from_dict
from crs.nn.kv_cache import left_pad, run_prefix
from crs.plugins.mese.generator import MeseGenerator
from crs.plugins.mese.plm import MOVIE_ID, TINY_NODE, MesePLM, replace_path
from crs.testing import make_tiny_batch, make_tiny_deps

pytest.importorskip("transformers")


def make_generator(**overrides) -> MeseGenerator:
    deps = make_tiny_deps("model.generator")
    return MeseGenerator(from_dict(MeseGenerator.Config, dict(overrides), "model.generator"),
                         replace_path(deps, "model.generator"))


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    deps = make_tiny_deps("model.plm")
    plm = MesePLM(from_dict(MesePLM.Config, {**TINY_NODE, "label_smoothing": 0.0}, "model.plm"), deps).double()
    plm.eval()
    batch = make_tiny_batch(deps)
    index = torch.arange(5)
    embeds = torch.randn(5, 32, dtype=torch.float64)
    out = plm({"context_turns": batch["batch.context_turns"], "item_index": index, "item_embeds": embeds})
    inputs = {"plm_context": out["plm_context"], "response_turn": batch["batch.response_turn"],
              "item_index": index, "item_embeds": embeds}
    return {"plm": plm, "batch": batch, "inputs": inputs}


def _hand_losses(world) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean CE over decision + reply tokens, and NLL sum/count over reply tokens, from full passes of D'."""
    plm, inputs = world["plm"], world["inputs"]
    table = plm.model.get_input_embeddings()
    special = plm.special
    terms, reply_terms = [], []
    for turns, reply in zip(world["batch"]["batch.context_turns"], world["batch"]["batch.response_turn"]):
        seq = plm.dialogue_sequence(turns)
        d, _ = plm.embed([seq], inputs["item_index"], inputs["item_embeds"])
        d = d[0]
        reply_ids = [*plm.text_ids(reply["text"], list(reply["items"])), *special.eot]
        gold = list(dict.fromkeys(reply["items"]))
        if gold:  # D' = D ITE.. [REC_END] reply EOT; the decision (before [REC]) must say [REC]
            tail = torch.cat([inputs["item_embeds"][gold], table(torch.tensor([special.rec_end, *reply_ids]))])
            full = torch.cat([d, tail])
            first_reply = len(d) + len(gold) + 1
            decision = (len(d) - 2, special.rec)
        else:  # D' = D without [REC], then reply EOT; the decision is the first reply token
            full = torch.cat([d[:-1], table(torch.tensor(reply_ids))])
            first_reply = len(d) - 1
            decision = None
        hidden, _ = run_prefix(plm.model, *left_pad([full]))
        log_probs = F.log_softmax(plm.model.get_output_embeddings()(hidden[0]), dim=-1)
        if decision is not None:
            terms.append(-log_probs[decision[0], decision[1]])
        for j, token in enumerate(reply_ids):
            term = -log_probs[first_reply + j - 1, token]
            terms.append(term)
            reply_terms.append(term)
    return torch.stack(terms).mean(), torch.stack(reply_terms).sum(), torch.tensor(float(len(reply_terms)))


def test_the_tiny_batch_mixes_recommending_and_plain_turns(world):
    golds = [MeseGenerator.gold_items(r) for r in world["batch"]["batch.response_turn"]]
    assert golds == [[1], [3], []]


def test_loss_and_nll_equal_a_hand_computation_over_full_passes(world):
    out = make_generator()(world["inputs"])
    loss, nll_sum, nll_count = _hand_losses(world)
    assert torch.allclose(out["loss.gen"], loss, atol=1e-6)
    assert torch.allclose(out["nll_sum"], nll_sum, atol=1e-6) and float(out["nll_count"]) == float(nll_count)


def test_label_smoothing_applies_to_loss_gen_only(world):
    plm = world["plm"]
    plm.config.label_smoothing = 0.1
    try:
        smoothed = make_generator()(world["inputs"])
    finally:
        plm.config.label_smoothing = 0.0
    plain = make_generator()(world["inputs"])
    assert not torch.allclose(smoothed["loss.gen"], plain["loss.gen"])
    assert torch.allclose(smoothed["nll_sum"], plain["nll_sum"])


def test_greedy_decoding_over_the_cache_equals_greedy_full_passes(world):
    plm, inputs = world["plm"], world["inputs"]
    gen = make_generator()
    context = inputs["plm_context"]
    table = plm.model.get_input_embeddings()
    for row, items in ((2, []), (0, [4])):
        trace: list = []
        ids = gen.reply_token_ids(context, inputs, row, items, limit=6, trace=trace)
        seq = plm.dialogue_sequence(world["batch"]["batch.context_turns"][row])
        d, _ = plm.embed([seq], inputs["item_index"], inputs["item_embeds"])
        if items:
            sequence = torch.cat([d[0], inputs["item_embeds"][items], table(torch.tensor([plm.special.rec_end]))])
        else:
            sequence = d[0, :-1]
        expected = []
        for _ in range(len(ids)):
            hidden, _ = run_prefix(plm.model, *left_pad([sequence]))
            logits = plm.model.get_output_embeddings()(hidden[0, -1])
            if not items and not expected:  # the reply's first token is never [REC]
                logits = logits.clone()
                logits[plm.special.rec] = float("-inf")
            assert torch.allclose(trace[len(expected)], logits, atol=1e-6)
            token = int(logits.argmax())
            expected.append(token)
            sequence = torch.cat([sequence, table(torch.tensor([token]))])
        assert ids == expected and 1 <= len(ids) <= 6


def _chosen_items(world, monkeypatch, gen, decision_rows, ranked):
    inputs = world["inputs"]
    context = inputs["plm_context"]
    logits = torch.zeros_like(context.decision_logits)
    logits[:, 5] = 1.0
    for row in decision_rows:
        logits[row, context.special.rec] = 2.0
    monkeypatch.setattr(context, "decision_logits", logits)
    seen = []
    monkeypatch.setattr(gen, "_reply", lambda ctx, inp, row, items, limit: seen.append(items) or "")
    gen.generate_text({**inputs, "recommend": lambda k: torch.tensor(ranked)[:, :k]}, max_len=5)
    return seen


def test_predicted_items_come_from_the_ranking_never_from_the_gold(world, monkeypatch):
    ranked = [[4, 0], [2, 1], [0, 3]]
    seen = _chosen_items(world, monkeypatch, make_generator(items="predicted"), [0, 2], ranked)
    assert seen == [[4], [], [0]]  # rows 0 and 2 decide [REC] and get their top-ranked item; the gold is [1], [3]
    seen = _chosen_items(world, monkeypatch, make_generator(items="gold"), [0, 2], ranked)
    assert seen == [[1], [3], []]  # the gold protocol inserts the reference's items, whatever the model decides


def test_the_kth_placeholder_becomes_the_kth_item():
    gen = make_generator()
    texts = [f"try {MOVIE_ID} or {MOVIE_ID}", f"no {MOVIE_ID}", "nothing"]
    ranked = torch.tensor([[3, 2, 0], [1, 0, 2], [4, 1, 0]])
    filled = gen._fill(texts, [[2], [], []], {"recommend": lambda k: ranked[:, :k]})
    assert filled == ["try @item2 or @item3", "no @item1", "nothing"]
    titled = make_generator(fill="title")._fill([f"see {MOVIE_ID}"], [[0]], {})
    names = make_tiny_deps().items.names
    assert titled == [f"see {names[0]}"]


def test_generate_text_runs_end_to_end(world):
    texts = make_generator(max_reply_tokens=4).generate_text(
        {**world["inputs"], "recommend": lambda k: torch.tensor([[4], [2], [0]])[:, :k]}, max_len=10)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
