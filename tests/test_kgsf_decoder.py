"""KGSF's KG-enhanced decoder (type `kgsf_decoder`) and its copy mixture (Eq. 10-19)."""
import math

import pytest
import torch
import torch.nn.functional as F
from test_generators import assert_greedy

from crs.data.vocab import Vocabulary
from crs.errors import ConfigError
from crs.interfaces import BuildDeps, ItemIndex
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.copy import CopyMixture
from crs.plugins.kgsf.decoder import KGSFDecoder

WORDS = "i like scary comedy movies great have you seen @101 @202 it is what about sure try".split()
WORD_NODES = ["scary", "comedy", "movies", "great", "science_fiction", "unknownword"]
ENTITY_NODES = ["dbr:Alien", "dbr:Ridley_Scott", "dbr:Airplane!"]


def make_deps():
    vocab = Vocabulary(WORDS)
    word_kg = KnowledgeGraph(WORD, WORD_NODES, ["related"], [0, 1], [0, 0], [2, 2])
    entity_kg = KnowledgeGraph(ENTITY, ENTITY_NODES, ["director"], [0], [0], [1])
    words = IndexedGraph.from_graph("word_kg", word_kg)
    entities = IndexedGraph.from_graph("entity_kg", entity_kg)
    items = ItemIndex(ids=["101", "202"], names=["Alien", "Airplane!"],
                      entity_nodes=torch.tensor([entities.node_index["dbr:Alien"],
                                                 entities.node_index["dbr:Airplane!"]]),
                      train_counts=torch.tensor([3.0, 1.0]))
    deps = BuildDeps(path="model.generator", vocab=vocab, items=items,
                     graphs={"word_kg": words, "entity_kg": entities})
    return deps, vocab, words, entities


def make_decoder(**overrides):
    deps, vocab, words, entities = make_deps()
    config = KGSFDecoder.Config(**{"dim": 16, "heads": 2, "layers": 1, "ffn_dim": 32, "dropout": 0.0,
                                   "word_dim": 16, "entity_dim": 16, **overrides})
    return KGSFDecoder(config, deps), vocab, words, entities


def make_inputs(decoder, vocab, words, entities, responses=("scary movies", "have you seen @101")):
    rows = [[vocab.bos, *vocab.encode(r), vocab.eos] for r in responses]
    width = max(map(len, rows))
    response = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    tokens = torch.tensor([vocab.encode("i like scary movies"), vocab.encode("what about comedy it")])
    context_words = torch.tensor([[words.node_index["scary"], words.node_index["movies"]], [0, 0]])
    context_entities = torch.tensor([[entities.node_index["dbr:Ridley_Scott"], 0],
                                     [entities.node_index["dbr:Alien"], entities.node_index["dbr:Airplane!"]]])
    return {
        "tokens": tokens, "tokens_mask": tokens != 0, "response": response, "response_mask": response != 0,
        "word_nodes": torch.randn(words.num_nodes, decoder.config.word_dim, requires_grad=True),
        "entity_nodes": torch.randn(entities.num_nodes, decoder.config.entity_dim, requires_grad=True),
        "context_words": context_words, "context_words_mask": context_words != 0,
        "context_entities": context_entities, "context_entities_mask": context_entities != 0,
    }


def test_node_token_maps():
    decoder, vocab, words, entities = make_decoder()
    assert decoder.word_tokens[words.node_index["scary"]] == vocab.index["scary"]
    assert decoder.word_tokens[words.node_index["science_fiction"]] == 0  # multi-word concept: no token
    assert decoder.word_tokens[words.node_index["unknownword"]] == 0  # not in the vocabulary
    assert decoder.word_tokens[0] == 0  # pad node
    assert decoder.entity_tokens[entities.node_index["dbr:Alien"]] == vocab.index["@101"]
    assert decoder.entity_tokens[entities.node_index["dbr:Airplane!"]] == vocab.index["@202"]
    assert decoder.entity_tokens[entities.node_index["dbr:Ridley_Scott"]] == 0  # not an item


def test_ports_decoder_chain_and_normalised_output():
    decoder, vocab, words, entities = make_decoder()
    ports = decoder.input_ports()
    assert ports["word_nodes"].key == "word_nodes" and ports["word_nodes"].dim == 16
    assert ports["context_entities_mask"].key == "batch.context_entities_mask"
    assert list(decoder.decoder.layers[0].cross_attn) == ["words", "entities", "encoder"]
    inputs = make_inputs(decoder, vocab, words, entities)
    with torch.no_grad():  # the full distribution is returned when no gradient is needed
        full = decoder(inputs)
    probs = full["logits"].exp().sum(-1)  # row 1 has no context words, only item entities
    assert torch.allclose(probs, torch.ones_like(probs), atol=1e-4)
    out = decoder(inputs)  # training path: targets' log-probabilities only
    assert "logits" not in out
    assert out["nll_count"].item() == (inputs["response"][:, 1:] != 0).sum().item()
    assert torch.allclose(out["loss.gen"], full["loss.gen"], atol=1e-5)
    assert torch.allclose(out["nll_sum"], full["nll_sum"], atol=1e-4)
    out["loss.gen"].backward()
    assert inputs["word_nodes"].grad.abs().sum() > 0 and inputs["entity_nodes"].grad.abs().sum() > 0


def test_all_padding_graph_memories_give_no_nan():
    decoder, vocab, words, entities = make_decoder()
    inputs = make_inputs(decoder, vocab, words, entities)
    for key in ("context_words", "context_entities"):
        inputs[key] = torch.zeros_like(inputs[key])
        inputs[key + "_mask"] = torch.zeros_like(inputs[key + "_mask"])
    out = decoder(inputs)
    with torch.no_grad():
        full = decoder(inputs)
    assert torch.isfinite(out["loss.gen"]) and torch.isfinite(full["logits"]).all()
    assert torch.allclose(out["loss.gen"], full["loss.gen"], atol=1e-5)
    out["loss.gen"].backward()
    assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)
    # with nothing to copy the gate is forced open: the output is exactly the vocabulary softmax
    with torch.no_grad():
        hidden = decoder.decoder(inputs["response"][:, :-1], decoder.encode(inputs))
        expected = F.log_softmax(hidden @ decoder.embedding.weight.t(), -1)
    assert torch.allclose(full["logits"], expected, atol=1e-5)


def test_copy_mixture_moves_mass_onto_the_copied_nodes_token():
    mixture = CopyMixture(8)
    with torch.no_grad():
        mixture.query.weight.copy_(torch.eye(8) * 10)
        mixture.gate.weight.zero_()
        mixture.gate.bias.fill_(-3.0)  # p_gen = sigmoid(-3) ~ 0.047: mostly copy
    hidden = torch.zeros(1, 1, 8)
    hidden[0, 0, 0] = 1.0
    nodes = torch.zeros(1, 3, 8)
    nodes[0, 0, 0], nodes[0, 1, 1], nodes[0, 2, 0] = 5.0, 5.0, 5.0  # node 0 aligned with the state
    node_tokens = torch.tensor([[7, 4, 9]])
    copyable = torch.tensor([[True, True, False]])  # node 2 has no token / is padding
    vocab_size = 12
    uniform = torch.full((1, 1, vocab_size), -math.log(vocab_size))
    log_probs = mixture(hidden, uniform, nodes, node_tokens, copyable)
    probs = log_probs.exp()[0, 0]
    assert torch.allclose(probs.sum(), torch.tensor(1.0), atol=1e-5)
    assert probs[7] > 0.9  # the aligned node's token takes almost all mass
    assert probs[9] < 0.01  # a non-copyable node gets only its share of the uniform Pr1
    p_gen = torch.sigmoid(torch.tensor(-3.0))
    assert torch.allclose(probs[3], p_gen / vocab_size, atol=1e-6)  # tokens of no node: p_gen * Pr1
    log_probs.sum().backward()  # tokens with Pr2 = 0 must not produce NaN gradients
    assert all(torch.isfinite(p.grad).all() for p in mixture.parameters())


def _train(decoder, inputs, steps, lr=5e-3):
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        decoder(inputs)["loss.gen"].backward()
        optimizer.step()


def test_copy_puts_more_mass_on_context_graph_tokens_than_no_copy():
    """Replies name a context word / item chosen at random per example: only copying can track it."""
    torch.manual_seed(0)
    deps, vocab, words, entities = make_deps()
    candidates = [("scary", words.node_index["scary"]), ("comedy", words.node_index["comedy"]),
                  ("movies", words.node_index["movies"]), ("great", words.node_index["great"])]
    batch = 16
    picks = torch.randint(0, len(candidates), (batch,))
    targets = torch.tensor([vocab.index[candidates[i][0]] for i in picks])
    context_words = torch.tensor([[candidates[i][1]] for i in picks])
    response = torch.stack([torch.full((batch,), vocab.bos), targets, torch.full((batch,), vocab.eos)], 1)
    tokens = torch.full((batch, 2), vocab.index["i"])
    node_embeddings = {"word_nodes": torch.randn(words.num_nodes, 16),
                       "entity_nodes": torch.randn(entities.num_nodes, 16)}
    inputs = {"tokens": tokens, "tokens_mask": tokens != 0, "response": response, "response_mask": response != 0,
              "context_words": context_words, "context_words_mask": context_words != 0,
              "context_entities": torch.zeros(batch, 1, dtype=torch.long),
              "context_entities_mask": torch.zeros(batch, 1, dtype=torch.bool), **node_embeddings}
    mass = {}
    for copy in (True, False):
        torch.manual_seed(1)
        decoder = KGSFDecoder(KGSFDecoder.Config(dim=16, heads=2, layers=1, ffn_dim=32, dropout=0.0, copy=copy,
                                                 word_dim=16, entity_dim=16), deps)
        _train(decoder, inputs, steps=30)
        with torch.no_grad():
            log_probs = decoder(inputs)["logits"][:, 0]  # the first reply token
        mass[copy] = log_probs.exp().gather(1, targets[:, None]).mean().item()
    print("mean probability of the context token:", mass)
    assert mass[True] > mass[False] + 0.1 and mass[True] > 0.5


def test_copy_off_gives_the_plain_vocabulary_softmax():
    decoder, vocab, words, entities = make_decoder(copy=False)
    assert decoder.copy is None
    inputs = make_inputs(decoder, vocab, words, entities)
    with torch.no_grad():
        memories = decoder.encode(inputs)
        hidden = decoder.decoder(inputs["response"][:, :-1], memories)
        expected = F.log_softmax(hidden @ decoder.embedding.weight.t(), -1)
        full = decoder(inputs)
    assert torch.allclose(full["logits"], expected, atol=1e-5)
    assert torch.allclose(decoder(inputs)["loss.gen"], full["loss.gen"], atol=1e-5)


def test_kgsf_decoder_is_causal_and_generates():
    decoder, vocab, words, entities = make_decoder(word_dim=8, entity_dim=12)  # projected to dim 16
    decoder.eval()
    inputs = make_inputs(decoder, vocab, words, entities, responses=("scary movies great", "it is great"))
    changed = dict(inputs, response=inputs["response"].clone())
    changed["response"][:, 3] = vocab.index["comedy"]
    with torch.no_grad():
        a, b = decoder(inputs)["logits"], decoder(changed)["logits"]
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5) and not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-4)
    context = {k: v for k, v in inputs.items() if not k.startswith("response")}
    generated = decoder.generate(context, max_len=5)
    assert generated.size(0) == 2
    assert_greedy(decoder, context, generated, max_len=5)  # the copy mixture's argmax, step by step


# Replies that name words of their context and items of their context entities (@101 is Alien, @202 Airplane!).
EXAMPLES = [("i like scary movies", ["scary", "movies"], ["dbr:Ridley_Scott", "dbr:Alien"], "have you seen @101"),
            ("what about comedy it", ["comedy"], ["dbr:Airplane!"], "sure try @202 it is great"),
            ("i like comedy movies", ["comedy", "movies"], [], "great comedy movies"),
            ("i like scary comedy", ["scary", "comedy", "great"], ["dbr:Airplane!", "dbr:Ridley_Scott"],
             "what about @202")]


def _pad(rows):
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_overfits_a_few_replies_and_greedy_decoding_reproduces_them_copying_the_items():
    torch.manual_seed(0)
    decoder, vocab, words, entities = make_decoder()
    tokens = _pad([vocab.encode(context) for context, *_ in EXAMPLES])
    context_words = _pad([[words.node_index[w] for w in nodes] for _, nodes, _, _ in EXAMPLES])
    context_entities = _pad([[entities.node_index[e] for e in nodes] or [0] for _, _, nodes, _ in EXAMPLES])
    response = _pad([[vocab.bos, *vocab.encode(reply), vocab.eos] for *_, reply in EXAMPLES])
    context = {"tokens": tokens, "tokens_mask": tokens != 0,
               "word_nodes": torch.randn(words.num_nodes, 16), "entity_nodes": torch.randn(entities.num_nodes, 16),
               "context_words": context_words, "context_words_mask": context_words != 0,
               "context_entities": context_entities, "context_entities_mask": context_entities != 0}
    inputs = dict(context, response=response, response_mask=response != 0)
    first = decoder(inputs)["loss.gen"].item()
    _train(decoder, inputs, steps=60, lr=1e-2)
    decoder.eval()
    with torch.no_grad():
        last = decoder(inputs)["loss.gen"].item()
    assert last < 0.05 < first

    generated = decoder.generate(context, max_len=10)
    assert [vocab.decode(row) for row in generated.tolist()] == [reply.split() for *_, reply in EXAMPLES]
    assert generated.size(1) == max(len(reply.split()) for *_, reply in EXAMPLES) + 1  # EOS ends every row

    # The item tokens come through the copy term: P(item) - p_gen * Pr1(item) = (1 - p_gen) * Pr2(item).
    with torch.no_grad():
        probs = decoder(inputs)["logits"].exp()
        hidden = decoder.decoder(response[:, :-1], decoder.encode(inputs))
        vocab_part = torch.sigmoid(decoder.copy.gate(hidden)) * decoder.vocab_log_probs(hidden, inputs).exp()
    for row, (*_, reply) in enumerate(EXAMPLES):
        for position, word in enumerate(reply.split()):
            if word.startswith("@"):
                token = vocab.index[word]
                copied = probs[row, position, token] - vocab_part[row, position, token]
                assert copied > 0.5 * probs[row, position, token], (reply, word)


def test_config_errors():
    with pytest.raises(ConfigError, match="model.generator.word_graph"):
        make_decoder(word_graph="conceptnet")
    decoder, vocab, words, entities = make_decoder()
    inputs = make_inputs(decoder, vocab, words, entities)
    inputs["entity_nodes"] = torch.randn(2, 16)
    with pytest.raises(ConfigError, match="entity_nodes"):
        decoder(inputs)


def test_passes_the_shared_component_check_on_the_tiny_batch(tiny_deps, tiny_batch):
    from crs.testing import check_component

    batch = dict(tiny_batch)
    batch["word_nodes"] = torch.randn(tiny_deps.graphs["word_kg"].num_nodes, 8)
    batch["entity_nodes"] = torch.randn(tiny_deps.graphs["entity_kg"].num_nodes, 8)
    node = {"dim": 16, "heads": 2, "layers": 1, "ffn_dim": 32, "word_dim": 8, "entity_dim": 8}
    component, _ = check_component(KGSFDecoder, node, tiny_deps, batch)
    ports = component.input_ports()
    inputs = {local: batch[port.key] for local, port in ports.items() if port.key in batch}  # optional ports too
    with torch.no_grad():
        out = component(inputs)
    probs = out["logits"].exp().sum(-1)
    assert torch.isfinite(out["loss.gen"]) and torch.allclose(probs, torch.ones_like(probs), atol=1e-4)
    component.eval()
    context = {local: value for local, value in inputs.items() if not local.startswith("response")}
    generated = component.generate(context, 6)
    assert generated.size(0) == len(batch["batch.context_tokens"])
    assert_greedy(component, context, generated, max_len=6)
