"""KGSF's copy mechanism through the whole decoder (issue 15, item 2).

The unit tests of :class:`CopyMixture` (tests/test_kgsf_decoder.py) feed it one node at a
time; here the real ``kgsf_decoder`` runs end to end on contexts with several word nodes
and several entity nodes, two of which are items whose ``@id`` tokens are in the
vocabulary, one an entity that is no item, and one item that is *not* in the context.
These tests are the ones that fail when the copy attention ignores the node states, or
when only word nodes (never entity / item nodes) can be copied.
"""
import pytest
import torch

from crs.data.vocab import Vocabulary, item_token
from crs.interfaces import BuildDeps, ItemIndex
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.decoder import KGSFDecoder

WORDS = "i like scary comedy movies great have you seen @101 @202 @303 it is what about sure try thanks".split()
WORD_NODES = ["scary", "comedy", "movies", "great", "thanks", "science_fiction"]
ENTITY_NODES = ["dbr:Alien", "dbr:Ridley_Scott", "dbr:Airplane!", "dbr:Heat", "dbr:Michael_Mann"]
ITEMS = {"101": "dbr:Alien", "202": "dbr:Airplane!", "303": "dbr:Heat"}
DIM = 16

# Every row's context: four word nodes, two item entities and one entity that is no item.
# "thanks" (a word node) and Heat (@303, an item) exist but are not in the context.
CONTEXT_WORDS = ["scary", "comedy", "movies", "great"]
CONTEXT_ENTITIES = ["dbr:Alien", "dbr:Ridley_Scott", "dbr:Airplane!"]
CONTEXT_TOKENS = ["i like scary movies", "what about comedy", "have you seen it"]


def make_decoder(seed=0):
    torch.manual_seed(seed)
    vocab = Vocabulary(WORDS)
    word_kg = KnowledgeGraph(WORD, WORD_NODES, ["related"], [0, 1], [0, 0], [2, 2])
    entity_kg = KnowledgeGraph(ENTITY, ENTITY_NODES, ["director"], [0, 3], [0, 0], [1, 4])
    words = IndexedGraph.from_graph("word_kg", word_kg)
    entities = IndexedGraph.from_graph("entity_kg", entity_kg)
    items = ItemIndex(ids=list(ITEMS), names=list(ITEMS.values()),
                      entity_nodes=torch.tensor([entities.node_index[n] for n in ITEMS.values()]),
                      train_counts=torch.ones(len(ITEMS)))
    deps = BuildDeps(path="model.generator", vocab=vocab, items=items,
                     graphs={"word_kg": words, "entity_kg": entities})
    config = KGSFDecoder.Config(dim=DIM, heads=2, layers=1, ffn_dim=32, dropout=0.0, word_dim=DIM, entity_dim=DIM)
    decoder = KGSFDecoder(config, deps).eval()
    return decoder, vocab, words, entities


def orthonormal_node_embeddings(words, entities):
    """One-hot node states (word nodes e_0.., entity nodes e_8..): context nodes are mutually orthogonal."""
    word_nodes = torch.zeros(words.num_nodes, DIM)
    entity_nodes = torch.zeros(entities.num_nodes, DIM)
    for node in range(1, words.num_nodes):
        word_nodes[node, node - 1] = 1.0
    for node in range(1, entities.num_nodes):
        entity_nodes[node, 7 + node] = 1.0
    assert words.num_nodes - 1 <= 8 and 7 + entities.num_nodes <= DIM
    return word_nodes, entity_nodes


def make_inputs(vocab, words, entities, node_embeddings=None, context_words=CONTEXT_WORDS, responses=None):
    batch = len(CONTEXT_TOKENS)
    rows = [vocab.encode(text) for text in CONTEXT_TOKENS]
    width = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    word_ids = torch.tensor([[words.node_index[w] for w in context_words] or [0]] * batch)
    entity_ids = torch.tensor([[entities.node_index[e] for e in CONTEXT_ENTITIES]] * batch)
    if node_embeddings is None:
        node_embeddings = (torch.randn(words.num_nodes, DIM), torch.randn(entities.num_nodes, DIM))
    inputs = {"tokens": tokens, "tokens_mask": tokens != 0,
              "word_nodes": node_embeddings[0], "entity_nodes": node_embeddings[1],
              "context_words": word_ids, "context_words_mask": word_ids != 0,
              "context_entities": entity_ids, "context_entities_mask": entity_ids != 0}
    if responses is not None:
        encoded = [[vocab.bos, *vocab.encode(r), vocab.eos] for r in responses]
        width = max(map(len, encoded))
        response = torch.tensor([r + [0] * (width - len(r)) for r in encoded])
        inputs.update(response=response, response_mask=response != 0)
    return inputs


def node_states(decoder, inputs):
    """The context's projected node states (B, N, D) in the copy mixture's order: words, then entities."""
    words = decoder.word_proj(inputs["word_nodes"][inputs["context_words"]])
    entities = decoder.entity_proj(inputs["entity_nodes"][inputs["context_entities"]])
    return torch.cat([words, entities], dim=1)


def record_copy_attention(decoder, monkeypatch):
    """Every copy attention (B, T, N) the decoder computes, as it computes it."""
    recorded = []
    compute = decoder.copy.attention

    def record(*args, **kwargs):
        attention = compute(*args, **kwargs)
        recorded.append(attention)
        return attention

    monkeypatch.setattr(decoder.copy, "attention", record)
    return recorded


def token_of(vocab, node):
    """The vocab id a context node copies to: its word, or for an item's entity node the item's token."""
    items = {entity: item for item, entity in ITEMS.items()}
    return vocab.index[item_token(items[node])] if node in items else vocab.index[node]


def copy_term(decoder, inputs):
    """(P, copy mass, p_gen) of each reply position: copy mass = P - p_gen * Pr1 = (1 - p_gen) * Pr2."""
    with torch.no_grad():
        probs = decoder(inputs)["logits"].exp()  # the whole decoder's output distribution
        hidden = decoder.decoder(inputs["response"][:, :-1], decoder.encode(inputs))
        vocab_probs = decoder.vocab_log_probs(hidden, inputs).exp()
        p_gen = torch.sigmoid(decoder.copy.gate(hidden))
    return probs, probs - p_gen * vocab_probs, p_gen.squeeze(-1)


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aligned", [["comedy", "dbr:Airplane!", "dbr:Alien"], ["dbr:Alien", "great", "dbr:Airplane!"]])
def test_copy_attention_favours_the_node_aligned_with_the_decoder_query(aligned, monkeypatch):
    """Each row's copy query W_c R_1 is set to point at one context node (a word or an item entity);
    that node must take the copy attention, the reply's first token and the first generated token.

    The node states are one-hot (mutually orthogonal), so only the aligned node has a non-zero
    score: attention that ignores the node states (uniform, or computed from zeros) spreads the
    mass evenly over the six copyable nodes instead.
    """
    decoder, vocab, words, entities = make_decoder()
    inputs = make_inputs(vocab, words, entities, orthonormal_node_embeddings(words, entities))
    names = CONTEXT_WORDS + CONTEXT_ENTITIES
    states = node_states(decoder, inputs)  # (B, N, D)
    target = torch.stack([states[row, names.index(name)] for row, name in enumerate(aligned)])
    with torch.no_grad():
        bos = torch.full((len(aligned), 1), vocab.bos)
        first = decoder.decoder(bos, decoder.encode(inputs))[:, 0]  # R_1 of each row (B, D)
        # W_c with W_c R_1 = 40 * (aligned node state) for every row: score 40/sqrt(16) = 10 there, 0 elsewhere
        decoder.copy.query.weight.copy_((torch.linalg.pinv(first) @ (40.0 * target)).t())
        decoder.copy.gate.weight.zero_()
        decoder.copy.gate.bias.fill_(-6.0)  # p_gen ~ 0.0025: the output is (almost) the copy distribution
    assert torch.allclose(decoder.copy.query(first), 40.0 * target, atol=1e-3)

    recorded = record_copy_attention(decoder, monkeypatch)
    tokens = [token_of(vocab, name) for name in aligned]
    scored = dict(inputs, response=torch.tensor([[vocab.bos, t, vocab.eos] for t in tokens]))
    scored["response_mask"] = scored["response"] != 0
    with torch.no_grad():
        probs = decoder(scored)["logits"].exp()[:, 0]  # the whole decoder's distribution of the first token
    [attention] = recorded
    assert attention.shape == (len(aligned), 2, len(names))  # every word and entity node is a candidate
    uncopyable = names.index("dbr:Ridley_Scott")  # an entity with no token
    for row, name in enumerate(aligned):
        weights = attention[row, 0]
        node = names.index(name)
        assert weights.argmax().item() == node, (name, weights)
        assert weights[node] > 0.95, (name, weights)
        others = torch.cat([weights[:node], weights[node + 1:]])
        assert others.max() < 0.01 and weights[uncopyable] == 0
        assert probs[row].argmax().item() == tokens[row] and probs[row, tokens[row]] > 0.9, name

    generated = decoder.generate(inputs, max_len=1)
    assert generated[:, 0].tolist() == tokens  # greedy decoding copies the aligned node's token


def test_copy_mass_goes_to_every_context_node_token_items_included_and_nowhere_else():
    """With random node states, the copy term (P - p_gen * Pr1) puts positive mass on the token of every
    copyable context node (four words, two items), none on anything else, and sums to 1 - p_gen."""
    decoder, vocab, words, entities = make_decoder(seed=3)
    inputs = make_inputs(vocab, words, entities, responses=["have you seen @101", "sure try @202", "scary movies"])
    probs, copied, p_gen = copy_term(decoder, inputs)
    assert torch.allclose(probs.sum(-1), torch.ones_like(p_gen), atol=1e-4)
    in_context = [vocab.index[w] for w in CONTEXT_WORDS] + [vocab.index["@101"], vocab.index["@202"]]
    items = [vocab.index["@101"], vocab.index["@202"]]
    elsewhere = torch.ones(len(vocab), dtype=torch.bool)
    elsewhere[in_context] = False
    assert (copied[..., items] > 1e-3 * (1 - p_gen)[..., None]).all()  # both context items get copy mass
    assert (copied[..., in_context] > 0).all()
    assert copied[..., items].sum(-1).min() > 0.05 * (1 - p_gen).min()  # a real share, not rounding
    assert copied[..., elsewhere].abs().max() < 1e-6  # @303 (not in the context), "thanks", specials: none
    assert copied[..., vocab.index["@303"]].abs().max() < 1e-6
    assert torch.allclose(copied[..., in_context].sum(-1), 1 - p_gen, atol=1e-5)

    # The training path (targets only, no (B, T, V) tensor) scores the item targets the same way.
    train = decoder(inputs)
    with torch.no_grad():
        full = decoder(inputs)
    assert torch.allclose(train["nll_sum"], full["nll_sum"], atol=1e-4)


def test_items_are_copied_from_a_context_with_no_word_nodes():
    """Only entity nodes in the context: the copy term must still carry 1 - p_gen, all on the two items."""
    decoder, vocab, words, entities = make_decoder(seed=4)
    inputs = make_inputs(vocab, words, entities, context_words=[], responses=["have you seen @101"] * 3)
    probs, copied, p_gen = copy_term(decoder, inputs)
    items = [vocab.index["@101"], vocab.index["@202"]]
    assert (1 - p_gen).min() > 0.05  # the gate is not forced open: there is something to copy
    assert torch.allclose(copied[..., items].sum(-1), 1 - p_gen, atol=1e-5)
    assert (copied[..., items] > 0).all()
    assert copied[..., vocab.index["@303"]].abs().max() < 1e-6


def test_training_learns_to_copy_the_item_named_by_the_context_entities():
    """Replies "have you seen @X" with X drawn per example from two items, X's entity node in the context
    (next to an entity that is no item): the context tokens are identical, so only the entity nodes say
    which item to name.  After training the decoder puts most of the mass on the right item, most of
    that mass comes through the copy term, and greedy decoding names the right item."""
    decoder, vocab, words, entities = make_decoder(seed=5)
    decoder.train()
    batch = 12
    torch.manual_seed(6)
    picks = torch.randint(0, 2, (batch,)).tolist()
    named = [[entities.node_index["dbr:Alien"], entities.node_index["dbr:Airplane!"]][p] for p in picks]
    context_entities = torch.tensor([[node, entities.node_index["dbr:Ridley_Scott"]] for node in named])
    target_tokens = [[vocab.index["@101"], vocab.index["@202"]][p] for p in picks]
    tokens = torch.full((batch, 3), vocab.index["i"])
    response = torch.tensor([[vocab.bos, *vocab.encode("have you seen"), t, vocab.eos] for t in target_tokens])
    word_ids = torch.tensor([[words.node_index["scary"], words.node_index["movies"]]] * batch)
    inputs = {"tokens": tokens, "tokens_mask": tokens != 0, "response": response, "response_mask": response != 0,
              "word_nodes": torch.randn(words.num_nodes, DIM), "entity_nodes": torch.randn(entities.num_nodes, DIM),
              "context_words": word_ids, "context_words_mask": word_ids != 0,
              "context_entities": context_entities, "context_entities_mask": context_entities != 0}
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(15):
        optimizer.zero_grad()
        decoder(inputs)["loss.gen"].backward()
        optimizer.step()
    decoder.eval()
    probs, copied, _ = copy_term(decoder, inputs)
    position = 3  # the item follows "have you seen"
    rows = torch.arange(batch)
    right = probs[rows, position, target_tokens]
    through_copy = copied[rows, position, target_tokens]
    print("P(item):", right.tolist(), "copied share:", (through_copy / right).tolist())
    assert right.min() > 0.4
    assert (through_copy / right).min() > 0.5
    generated = decoder.generate({k: v for k, v in inputs.items() if not k.startswith("response")}, max_len=6)
    assert generated[:, 3].tolist() == target_tokens
