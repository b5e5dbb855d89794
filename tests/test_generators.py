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


def test_overfits_a_few_examples_and_greedy_decoding_reproduces_them():
    torch.manual_seed(0)
    generator, vocab = make_generator(share_embeddings=False)
    batch = encode_batch(vocab, CONTEXTS, RESPONSES)
    optimizer = torch.optim.Adam(generator.parameters(), lr=3e-3)
    first = generator(batch)["loss.gen"].item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = generator(batch)["loss.gen"]
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 < first
    generator.eval()
    out = generator.generate({"tokens": batch["tokens"], "tokens_mask": batch["tokens_mask"]}, max_len=10)
    assert out.dtype == torch.long and out.size(0) == 3 and out.size(1) <= 10
    assert [vocab.decode(row) for row in out.tolist()] == [r.split() for r in RESPONSES]
    for row, response in zip(out.tolist(), RESPONSES):  # EOS kept, then padding only
        end = len(response.split())
        assert row[end] == vocab.eos and all(t == 0 for t in row[end + 1:])
    assert generator.training is False  # generate does not switch modes


def test_generate_respects_max_len_and_handles_an_empty_context():
    generator, vocab = make_generator()
    generator.eval()
    tokens = torch.tensor([[5, 6, 7], [0, 0, 0]])
    out = generator.generate({"tokens": tokens, "tokens_mask": tokens != 0}, max_len=4)
    assert out.shape[0] == 2 and out.shape[1] <= 4
    assert (out >= 0).all() and (out < len(vocab)).all()


def test_passes_the_shared_component_check_on_the_tiny_batch(tiny_deps, tiny_batch):
    from crs.testing import check_component

    component, outputs = check_component(TransformerGenerator, {"dim": 16, "heads": 2, "layers": 1, "ffn_dim": 32},
                                         tiny_deps, tiny_batch)
    targets = tiny_batch["batch.response_tokens_mask"][:, 1:].sum()
    assert outputs["nll_count"] == targets and torch.isfinite(outputs["loss.gen"])
    component.eval()
    replies = component.generate({"tokens": tiny_batch["batch.context_tokens"],
                                  "tokens_mask": tiny_batch["batch.context_tokens_mask"]}, 6)
    assert replies.shape[0] == tiny_batch["batch.context_tokens"].shape[0] and replies.shape[1] <= 6
