"""The plain Transformer generator (type `transformer`): ports, loss statistics, overfitting, greedy decoding."""
import pytest
import torch

from crs.data.vocab import Vocabulary
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, Generator
from crs.nn.seq2seq import TransformerGenerator

WORDS = "i like sci fi movies have you seen @101 it is great what about comedy sure try @202 thanks".split()


def make_generator(**overrides):
    vocab = Vocabulary(WORDS)
    config = TransformerGenerator.Config(**{"dim": 32, "heads": 4, "layers": 2, "ffn_dim": 64, "dropout": 0.0,
                                            **overrides})
    return TransformerGenerator(config, BuildDeps(path="model.generator", vocab=vocab)), vocab


def encode_batch(vocab, contexts, responses):
    def pad(rows):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows])

    tokens = pad([vocab.encode(c) for c in contexts])
    response = pad([[vocab.bos, *vocab.encode(r), vocab.eos] for r in responses])
    return {"tokens": tokens, "tokens_mask": tokens != 0, "response": response, "response_mask": response != 0}


CONTEXTS = ["i like sci fi movies", "what about comedy", "have you seen @101"]
RESPONSES = ["have you seen @101", "sure try @202", "it is great"]


def test_ports_and_outputs():
    generator, vocab = make_generator()
    assert isinstance(generator, Generator)
    ports = generator.input_ports()
    assert ports["tokens"].key == "batch.context_tokens" and ports["response"].optional
    assert ports["response_mask"].key == "batch.response_tokens_mask" and ports["response_mask"].optional
    assert {"loss.gen", "nll_sum", "nll_count"} <= set(generator.output_ports())
    batch = encode_batch(vocab, CONTEXTS, RESPONSES)
    with torch.no_grad():  # the full distribution is returned when no gradient is needed
        out = generator(batch)
    assert torch.allclose(generator(batch)["loss.gen"], out["loss.gen"], atol=1e-5)  # training path agrees
    targets = (batch["response"][:, 1:] != 0).sum().item()
    assert out["nll_count"].item() == targets
    assert out["nll_sum"].dtype == torch.float32 and out["nll_sum"].dim() == 0
    assert torch.allclose(out["loss.gen"], out["nll_sum"] / out["nll_count"], atol=1e-5)
    assert out["logits"].shape == (3, batch["response"].size(1) - 1, len(vocab))
    assert torch.allclose(out["logits"].exp().sum(-1), torch.ones(3, batch["response"].size(1) - 1), atol=1e-4)
    assert generator({"tokens": batch["tokens"], "tokens_mask": batch["tokens_mask"]}) == {}


def test_label_smoothing_changes_the_loss_but_not_the_perplexity_statistics():
    torch.manual_seed(0)
    plain, vocab = make_generator()
    torch.manual_seed(0)
    smoothed, _ = make_generator(label_smoothing=0.1)
    batch = encode_batch(vocab, CONTEXTS, RESPONSES)
    a, b = plain(batch), smoothed(batch)
    assert torch.allclose(a["nll_sum"], b["nll_sum"], atol=1e-4)
    assert not torch.allclose(a["loss.gen"], b["loss.gen"], atol=1e-4)


def test_bad_config_raises_config_error_with_path():
    with pytest.raises(ConfigError, match="model.generator.heads"):
        make_generator(dim=30, heads=4)
    with pytest.raises(ConfigError, match="vocab"):
        TransformerGenerator(TransformerGenerator.Config(), BuildDeps(path="model.generator"))


def assert_greedy(generator, inputs, replies, max_len):
    """`replies` (from ``generate``) are the greedy decoding of `generator`'s own distribution: each token
    is the argmax of the teacher-forced output given the context and the reply so far (PAD and BOS
    excluded, as ``generate`` excludes them), a row ends at its first EOS and is padded after it, and only
    a row that never produced EOS runs to `max_len`."""
    vocab_bos, eos, pad = generator.bos, generator.eos, generator.pad
    response = torch.cat([torch.full((replies.size(0), 1), vocab_bos), replies], dim=1)
    forced = {k: v for k, v in inputs.items() if not k.startswith("response")}
    with torch.no_grad():
        log_probs = generator(dict(forced, response=response, response_mask=response != pad))["logits"].clone()
    log_probs[..., [pad, vocab_bos]] = float("-inf")
    assert replies.size(1) <= max_len
    for row, reply in enumerate(replies.tolist()):
        end = reply.index(eos) + 1 if eos in reply else len(reply)
        assert reply[:end] == log_probs[row, :end].argmax(-1).tolist(), row
        assert all(t == pad for t in reply[end:]), row
        assert eos in reply or replies.size(1) == max_len, row


@pytest.fixture(scope="module")
def overfit():
    """A generator trained until it reproduces RESPONSES from CONTEXTS (shared: training takes seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before the suite's per-test one-thread fixture
    torch.manual_seed(0)
    generator, vocab = make_generator(share_embeddings=False, layers=1)
    batch = encode_batch(vocab, CONTEXTS, RESPONSES)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    first = generator(batch)["loss.gen"].item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = generator(batch)["loss.gen"]
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    generator.eval()
    return generator, vocab, batch, first, loss.item()


def test_overfits_a_few_examples_and_greedy_decoding_reproduces_them(overfit):
    generator, vocab, batch, first, last = overfit
    assert last < 0.05 < first
    out = generator.generate({"tokens": batch["tokens"], "tokens_mask": batch["tokens_mask"]}, max_len=10)
    assert out.dtype == torch.long
    assert [vocab.decode(row) for row in out.tolist()] == [r.split() for r in RESPONSES]
    for row, response in zip(out.tolist(), RESPONSES):  # EOS kept, then padding only
        end = len(response.split())
        assert row[end] == vocab.eos and all(t == 0 for t in row[end + 1:])
    assert out.size(1) == max(len(r.split()) for r in RESPONSES) + 1  # stops once every row has ended
    assert generator.training is False  # generate does not switch modes


def test_generate_stops_at_max_len_and_decodes_each_row_independently_of_the_others(overfit):
    generator, vocab, batch, _, _ = overfit
    short = generator.generate({"tokens": batch["tokens"], "tokens_mask": batch["tokens_mask"]}, max_len=2)
    assert [vocab.decode(row) for row in short.tolist()] == [r.split()[:2] for r in RESPONSES]  # cut, no EOS
    # A row with an empty context next to real ones: the real rows' replies are unchanged, and every
    # row (the empty one included) is the greedy decoding of the model's own distribution.
    tokens = torch.cat([batch["tokens"], torch.zeros_like(batch["tokens"][:1])])
    inputs = {"tokens": tokens, "tokens_mask": tokens != 0}
    out = generator.generate(inputs, max_len=8)
    assert [vocab.decode(row) for row in out[:3].tolist()] == [r.split() for r in RESPONSES]
    assert_greedy(generator, inputs, out, max_len=8)
    alone = generator.generate({"tokens": tokens[3:], "tokens_mask": tokens[3:] != 0}, max_len=8)
    assert alone[0].tolist() == out[3, :alone.size(1)].tolist()


def test_passes_the_shared_component_check_on_the_tiny_batch(tiny_deps, tiny_batch):
    from crs.testing import check_component

    component, outputs = check_component(TransformerGenerator, {"dim": 16, "heads": 2, "layers": 1, "ffn_dim": 32},
                                         tiny_deps, tiny_batch)
    targets = tiny_batch["batch.response_tokens_mask"][:, 1:].sum()
    assert outputs["nll_count"] == targets and torch.isfinite(outputs["loss.gen"])
    component.eval()
    inputs = {"tokens": tiny_batch["batch.context_tokens"], "tokens_mask": tiny_batch["batch.context_tokens_mask"]}
    replies = component.generate(inputs, 6)
    assert replies.size(0) == inputs["tokens"].size(0)
    assert_greedy(component, inputs, replies, max_len=6)
