"""The generator's hooks: one logits hook for loss and decoding, and token-weighted NLL."""
import pytest
import torch
from test_generators import CONTEXTS, encode_batch, make_generator
from test_kgsf_decoder import make_decoder, make_deps, make_inputs

from crs.interfaces import BuildDeps
from crs.nn import target_nll, token_nll
from crs.nn.seq2seq import TransformerGenerator
from crs.plugins.kgsf.decoder import KGSFDecoder

BIAS = 50.0


class VocabBias:
    """Mixin: a large bias on one token, added where the base class says logits are made."""

    biased_token: int = -1

    def vocab_logits(self, hidden, inputs):
        logits = super().vocab_logits(hidden, inputs)
        bias = torch.zeros(logits.size(-1))
        bias[self.biased_token] = BIAS
        return logits + bias


class BiasedTransformer(VocabBias, TransformerGenerator):
    pass


class BiasedKGSF(VocabBias, KGSFDecoder):
    pass


def biased_copy(model, cls, deps, token):
    """The same model (same parameters) whose logits hook adds the bias on `token`."""
    biased = cls(model.config, deps)
    biased.load_state_dict(model.state_dict())
    biased.biased_token = token
    return biased.eval()


def transformer_pair():
    torch.manual_seed(0)
    base, vocab = make_generator(dropout=0.0)
    deps = BuildDeps(path="model.generator", vocab=vocab)
    return base.eval(), biased_copy(base, BiasedTransformer, deps, vocab.index["thanks"]), vocab


def target_log_prob(model, inputs, token, grad):
    """Mean log-probability the loss path gives `token` as every target, with or without autograd."""
    batch = dict(inputs)
    rows = batch["tokens"].size(0)
    response = torch.tensor([[model.bos] + [token] * 4] * rows)  # no EOS: every target is `token`
    batch["response"], batch["response_mask"] = response, response != 0
    with torch.set_grad_enabled(grad):
        out = model(batch)
    return -float(out["loss.gen"].detach()), out  # loss.gen = mean NLL of the targets


@pytest.mark.parametrize("grad", [True, False], ids=["target-only path", "full path"])
def test_a_vocab_bias_raises_the_token_in_the_loss(grad):
    base, biased, vocab = transformer_pair()
    token = vocab.index["thanks"]
    inputs = encode_batch(vocab, CONTEXTS, ["sure"] * 3)
    plain, _ = target_log_prob(base, inputs, token, grad)
    raised, out = target_log_prob(biased, inputs, token, grad)
    assert raised > plain + 1.0
    if not grad:  # the full path also returns the distribution: the token dominates it
        assert bool((out["logits"][:, :-1].argmax(-1) == token).all())


def test_both_loss_paths_and_decoding_share_the_hook():
    base, biased, vocab = transformer_pair()
    token = vocab.index["thanks"]
    inputs = encode_batch(vocab, CONTEXTS, ["sure try @202"] * 3)
    fast, slow = biased(inputs)["loss.gen"], None
    with torch.no_grad():
        slow = biased(inputs)["loss.gen"]
    assert torch.allclose(fast, slow, atol=1e-5)  # same numbers with and without the target-only shortcut
    assert not bool((base.generate(inputs, max_len=5) == token).all())
    assert bool((biased.generate(inputs, max_len=5) == token).all())  # greedy decoding emits it every step


def test_the_hook_governs_kgsf_copy_decoder_too():
    torch.manual_seed(1)
    base, vocab, words, entities = make_decoder(copy=True)
    deps = make_deps()[0]
    token = vocab.index["sure"]
    biased = biased_copy(base, BiasedKGSF, deps, token)
    base.eval()
    inputs = make_inputs(base, vocab, words, entities)
    for grad in (True, False):
        plain, _ = target_log_prob(base, inputs, token, grad)
        raised, _ = target_log_prob(biased, inputs, token, grad)
        assert raised > plain + 0.5, grad
    # without the copy mixture the bias alone decides the argmax; with it, Pr1 is still what it raises
    torch.manual_seed(1)
    plain_kgsf, vocab, words, entities = make_decoder(copy=False)
    no_copy = biased_copy(plain_kgsf, BiasedKGSF, deps, token)
    assert bool((no_copy.generate(make_inputs(no_copy, vocab, words, entities), max_len=4) == token).all())


# ------------------------------------------------------------------ token weights
def test_token_weights_scale_the_loss_but_not_perplexity():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(2, 3, 5), dim=-1)
    targets = torch.tensor([[1, 2, 0], [3, 4, 4]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    plain = token_nll(log_probs, targets, mask)
    ones = token_nll(log_probs, targets, mask, token_weights=torch.ones(2, 3))
    assert torch.allclose(plain["loss"], ones["loss"])
    weights = torch.tensor([[2.0, 0.0, 9.0], [1.0, 0.5, 1.0]])  # 9.0 sits on padding: ignored
    weighted = token_nll(log_probs, targets, mask, token_weights=weights)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    expected = (nll * weights * mask).sum() / mask.sum()  # sum w*nll over #non-pad targets
    assert torch.allclose(weighted["loss"], expected)
    assert torch.equal(weighted["nll_sum"], plain["nll_sum"]) and torch.equal(weighted["nll_count"], plain["nll_count"])
    # the target-only form agrees, with label smoothing too
    smooth = -log_probs.mean(-1)
    a = token_nll(log_probs, targets, mask, 0.1, weights)
    b = target_nll(-nll, mask, 0.1, smooth, weights)
    assert torch.allclose(a["loss"], b["loss"])
    with pytest.raises(ValueError, match="token_weights has shape"):
        token_nll(log_probs, targets, mask, token_weights=torch.ones(2, 2))


class HalfWeightOnThanks(TransformerGenerator):
    def target_weights(self, targets, inputs):
        return torch.where(targets == self.down_weighted, 0.5, 1.0)


@pytest.mark.parametrize("grad", [True, False])
def test_generator_target_weights_reach_the_loss(grad):
    torch.manual_seed(0)
    base, vocab = make_generator(dropout=0.0)
    weighted = HalfWeightOnThanks(base.config, BuildDeps(path="model.generator", vocab=vocab))
    weighted.load_state_dict(base.state_dict())
    weighted.down_weighted = vocab.index["thanks"]
    inputs = encode_batch(vocab, CONTEXTS, ["thanks thanks", "sure", "thanks it is great"])
    with torch.set_grad_enabled(grad):
        plain, half = base.eval()(inputs), weighted.eval()(inputs)
    assert torch.equal(plain["nll_sum"], half["nll_sum"])  # perplexity statistics stay unweighted
    assert float(half["loss.gen"].detach()) < float(plain["loss.gen"].detach())
