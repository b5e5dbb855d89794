"""KGSF plugin behaviour the mutation run (TESTING.md) found untested: the exact config errors of every
KGSF component, what goes into a checkpoint, the R-GCN's gradients (first and second order) against a dense
reference, and the edge cases of the MIM loss (padding, samples that do not count, sampled negatives)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.decoder import KGSFDecoder
from crs.plugins.kgsf.gcn import WordGraphGCN, undirected_with_self_loops
from crs.plugins.kgsf.graph_common import DeviceGraphCache, node_embeddings
from crs.plugins.kgsf.mim import MutualInformationObjective
from crs.plugins.kgsf.recommender import DotProductRecommender
from crs.plugins.kgsf.rgcn import EntityGraphRGCN, _SegmentedMatmul, relation_pairs
from crs.plugins.kgsf.user_encoders import GateUserEncoder, SelfAttentionPoolEncoder
from crs.testing import make_tiny_batch, make_tiny_deps

PATH = "model.enc"


@pytest.fixture(scope="module")
def deps():
    return make_tiny_deps(PATH)


def positive_error(key: str, value) -> str:
    return f"config key '{PATH}.{key}': {key} must be positive, got {value}\n  fix: set {key}: 1 or more"


def non_negative_error(key: str, value) -> str:
    return f"config key '{PATH}.{key}': {key} must be 0 or more, got {value}\n  fix: set {key}: 0 or more"


def dropout_error(value) -> str:
    return f"config key '{PATH}.dropout': dropout must be in [0, 1), got {value}\n  fix: set dropout: 0.0 .. 0.9"


CONFIG_ERRORS = [
    (EntityGraphRGCN, {"dim": 0}, positive_error("dim", 0)),
    (EntityGraphRGCN, {"num_bases": -2}, positive_error("num_bases", -2)),
    (EntityGraphRGCN, {"layers": -1}, non_negative_error("layers", -1)),
    (EntityGraphRGCN, {"dropout": 1.0}, dropout_error(1.0)),
    (EntityGraphRGCN, {"dropout": -0.1}, dropout_error(-0.1)),
    (EntityGraphRGCN, {"aggregation": "max"},
     f"config key '{PATH}.aggregation': unknown aggregation 'max'\n  fix: use one of: mean, sum"),
    (EntityGraphRGCN, {"activation": "gelu"},
     f"config key '{PATH}.activation': unknown activation 'gelu'\n  fix: use one of: none, relu, tanh"),
    (EntityGraphRGCN, {"layers": 0, "featureless": True},
     f"config key '{PATH}.layers': a featureless R-GCN needs at least one layer (its first layer is what gives "
     "the nodes their representations)\n  fix: set layers: 1 (KGSF), or featureless: false for plain node "
     "embeddings"),
    (WordGraphGCN, {"dim": -1}, positive_error("dim", -1)),
    (WordGraphGCN, {"layers": -3}, non_negative_error("layers", -3)),
    (WordGraphGCN, {"dropout": 1.5}, dropout_error(1.5)),
    (WordGraphGCN, {"activation": "sigmoid"},
     f"config key '{PATH}.activation': unknown activation 'sigmoid'\n  fix: use one of: none, relu, tanh"),
    (MutualInformationObjective, {"word_dim": 0}, positive_error("word_dim", 0)),
    (MutualInformationObjective, {"entity_dim": 0}, positive_error("entity_dim", 0)),
    (MutualInformationObjective, {"negatives": -1},
     f"config key '{PATH}.negatives': must be >= 0, got -1\n  fix: use 0 for all entity nodes or a positive "
     "sample count"),
    (DotProductRecommender, {"dim": 0}, positive_error("dim", 0)),
    (SelfAttentionPoolEncoder, {"dim": 0}, positive_error("dim", 0)),
    (GateUserEncoder, {"dim": -4}, positive_error("dim", -4)),
]


@pytest.mark.parametrize("cls,values,message", CONFIG_ERRORS,
                         ids=[f"{c.__name__}-{next(iter(v))}" for c, v, _ in CONFIG_ERRORS])
def test_a_bad_config_value_names_its_key_the_value_and_the_fix(deps, cls, values, message):
    # Config(...) directly: Literal keys are checked by the component itself, not only by from_dict
    with pytest.raises(ConfigError) as err:
        cls(cls.Config(**values), deps)
    assert str(err.value) == message
    assert err.value.path == f"{PATH}.{next(iter(values))}"


def test_boundary_values_are_accepted(deps):
    EntityGraphRGCN(EntityGraphRGCN.Config(dim=1, num_bases=1, layers=0, dropout=0.0), deps)
    WordGraphGCN(WordGraphGCN.Config(dim=1, layers=0, dropout=0.99), deps)
    MutualInformationObjective(MutualInformationObjective.Config(word_dim=1, entity_dim=1, negatives=0), deps)


def test_the_decoder_says_which_graph_a_node_table_does_not_fit(deps):
    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, word_dim=8, entity_dim=8, heads=2, ffn_dim=16, layers=1), deps)
    batch = make_tiny_batch(deps)
    words = deps.graphs["word_kg"].num_nodes
    inputs = {"word_nodes": torch.randn(words + 1, 8),
              "entity_nodes": torch.randn(deps.graphs["entity_kg"].num_nodes, 8),
              **{port: batch[p.key] for port, p in decoder.input_ports().items() if p.key in batch}}
    with pytest.raises(ConfigError) as err:
        decoder.encode(inputs)
    assert str(err.value) == (
        f"config key '{PATH}.inputs.word_nodes': got {words + 1} node embeddings, but the graph has {words} "
        "nodes\n  fix: feed the node embeddings of the graph named in `word_graph`")


# ------------------------------------------------------------------ checkpoint contents
@pytest.mark.parametrize("cls,values", [
    (EntityGraphRGCN, {"dim": 8, "num_bases": 2}),
    (EntityGraphRGCN, {"dim": 8, "num_bases": 2, "featureless": True}),
    (WordGraphGCN, {"dim": 8}),
    (MutualInformationObjective, {"word_dim": 8, "entity_dim": 8}),
    (DotProductRecommender, {"dim": 8}),
    (KGSFDecoder, {"dim": 8, "word_dim": 8, "entity_dim": 8, "heads": 2, "ffn_dim": 16, "layers": 1}),
], ids=["rgcn", "rgcn-featureless", "gcn", "mim", "dot_product", "kgsf_decoder"])
def test_a_checkpoint_holds_learned_weights_only_never_the_graph_index(deps, cls, values):
    # graph index buffers are rebuilt from the data at every build; saving them would make checkpoints of
    # the same model differ with the graph's edge order, and break loading after a graph is re-indexed
    module = cls(cls.Config(**values), deps)
    assert set(module.state_dict()) == {name for name, _ in module.named_parameters(remove_duplicate=False)}


@pytest.mark.parametrize("trainable", [True, False])
def test_the_popularity_bias_is_the_log_of_add_one_smoothed_frequencies_and_is_saved(deps, trainable):
    module = DotProductRecommender(DotProductRecommender.Config(dim=4, item_bias=True, bias_init="popularity",
                                                                bias_trainable=trainable), deps)
    counts = np.array([3.0, 1.0, 0.0, 2.0, 1.0]) + 1.0
    torch.testing.assert_close(module.bias, torch.tensor(np.log(counts / counts.sum()), dtype=torch.float))
    assert isinstance(module.bias, torch.nn.Parameter) is trainable
    assert "bias" in module.state_dict()
    zero = DotProductRecommender(DotProductRecommender.Config(dim=4, item_bias=True), deps)
    assert torch.equal(zero.bias, torch.zeros(5))


# ------------------------------------------------------------------ graph building blocks
def test_node_embeddings_have_a_zero_pad_row_and_scaled_normal_rows():
    torch.manual_seed(0)
    table = node_embeddings(4000, 16)
    assert table.padding_idx == 0 and torch.count_nonzero(table.weight[0]) == 0
    assert abs(table.weight[1:].std().item() - 16 ** -0.5) < 0.01


def test_the_graph_cache_builds_once_per_device_and_forgets_its_graphs_when_copied():
    import copy

    built = []
    cache = DeviceGraphCache(lambda device: built.append(device) or f"graph on {device}")
    cpu = torch.device("cpu")
    assert cache.get(cpu) == "graph on cpu" and cache.get(cpu) == "graph on cpu"
    assert built == [cpu]
    clone = copy.deepcopy(cache)
    assert clone._graphs == {} and cache._graphs == {cpu: "graph on cpu"}
    assert clone.get(cpu) == "graph on cpu"  # the copy keeps the builder
    built.clear()
    cache.clear()
    cache.get(cpu)
    assert built == [cpu]


def test_undirected_with_self_loops_drops_given_loops_and_adds_one_per_node():
    src, dst = undirected_with_self_loops([0, 1, 2, 2], [1, 0, 2, 3], 4)
    assert src.dtype == np.int64 and dst.dtype == np.int64
    edges = sorted(zip(src.tolist(), dst.tolist()))
    # 0-1 twice (given both ways) collapses to one edge per direction; 2->2 is replaced by the added loop
    assert edges == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]


def test_relation_pairs_count_every_relation_even_unused_ones():
    pairs = relation_pairs(np.array([0, 1]), np.array([1, 2]), np.array([0, 0]), 3, 3)
    # two edges and their reverses, all relation 0, reach three (destination, relation) pairs
    assert pairs.pairs_per_relation.tolist() == [3, 0, 0]
    assert pairs.edge_pair.ndim == 1 and len(pairs.edge_pair) == 4
    assert pairs.pair_rel.tolist() == [0, 0, 0] and pairs.pair_dst.tolist() == [0, 1, 2]
    default = relation_pairs(np.array([0, 0]), np.array([1, 2]), np.array([0, 0]), 3, 1)
    # mean aggregation by default: node 0 receives from 1 and 2 (the reverses), each weighted 1/2
    weights = {(int(s), int(default.pair_dst[p])): float(w)
               for s, p, w in zip(default.edge_src, default.edge_pair, default.edge_weight)}
    assert weights[(1, 0)] == weights[(2, 0)] == 0.5 and weights[(0, 1)] == 1.0


def _world(seed: int = 0, nodes: int = 12, relations: int = 3, edges: int = 40) -> BuildDeps:
    rng = np.random.default_rng(seed)
    kg = KnowledgeGraph(ENTITY, [f"n{i}" for i in range(nodes)], [f"r{i}" for i in range(relations)],
                        rng.integers(0, nodes, edges), rng.integers(0, relations, edges),
                        rng.integers(0, nodes, edges))
    return BuildDeps(path=PATH, graphs={"entity_kg": IndexedGraph.from_graph("entity_kg", kg)})


def _dense_rgcn(module: EntityGraphRGCN, graph: IndexedGraph) -> torch.Tensor:
    """Eq. 2 with one dense mean-normalised adjacency per relation (reverse edges share the relation)."""
    keep = graph.src != graph.dst
    s, d, r = graph.src[keep], graph.dst[keep], graph.rel[keep]
    src, dst, rel = np.concatenate([s, d]), np.concatenate([d, s]), np.concatenate([r, r])
    h = module.embeddings.weight
    for layer in module.layers:
        weights = torch.einsum("rb,bio->rio", layer.coefficients, layer.bases)
        out = h @ layer.root + layer.bias
        for rid in range(module.num_relations):
            adjacency = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=h.dtype)
            for u, v, t in zip(src, dst, rel):
                if t == rid:
                    adjacency[v, u] += 1.0
            adjacency = adjacency / adjacency.sum(1, keepdim=True).clamp(min=1)
            out = out + adjacency @ h @ weights[rid]
        h = torch.relu(out)
    return h


def test_rgcn_gradients_equal_the_dense_reference_for_every_parameter():
    torch.manual_seed(0)
    world = _world()
    module = EntityGraphRGCN(EntityGraphRGCN.Config(dim=6, num_bases=2, layers=2, activation="relu"), world)
    with torch.no_grad():  # biases start at zero, where a bias added with the wrong sign goes unseen
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.5)
    weights = torch.randn(world.graphs["entity_kg"].num_nodes, 6)
    got = torch.autograd.grad((module.encode() * weights).sum(), list(module.parameters()))
    expected = torch.autograd.grad((_dense_rgcn(module, world.graphs["entity_kg"]) * weights).sum(),
                                   list(module.parameters()))
    for (name, _), g, e in zip(module.named_parameters(), got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")


def test_segmented_matmul_has_exact_first_and_second_order_gradients():
    # the relation-wise matmul runs its own backward, written with itself so that MAML's second-order
    # gradients flow through the R-GCN (DGL's kernels give first order only)
    torch.manual_seed(0)
    rows = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    bounds = ((0, 2), (2, 2), (2, 7))  # relation 1 has no rows
    apply = lambda r, w: _SegmentedMatmul.apply(r, w, bounds)  # noqa: E731
    assert torch.autograd.gradcheck(apply, (rows, weights))
    assert torch.autograd.gradgradcheck(apply, (rows, weights))
    out = apply(rows, weights)
    torch.testing.assert_close(out[:2], rows[:2] @ weights[0])
    torch.testing.assert_close(out[2:], rows[2:] @ weights[2])
    # only what needs a gradient gets one
    fixed = rows.detach()
    (grad_w,) = torch.autograd.grad(apply(fixed, weights).sum(), [weights])
    torch.testing.assert_close(grad_w[1], torch.zeros(3, 2, dtype=torch.float64))


def test_the_word_gcn_adds_its_bias_after_propagation(deps):
    module = WordGraphGCN(WordGraphGCN.Config(dim=4, layers=1), deps)
    with torch.no_grad():
        module.weights[0].weight.zero_()
        module.biases[0].fill_(0.5)
    assert torch.equal(module.encode(), torch.full((deps.graphs["word_kg"].num_nodes, 4), 0.5))


# ------------------------------------------------------------------ MIM edge cases
def _mim_inputs(words, entities, target, n_words=6, n_entities=8, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.tensor(words)
    entities = torch.tensor(entities)
    return {"word_nodes": torch.randn(n_words, dim, generator=g),
            "entity_nodes": torch.randn(n_entities, dim, generator=g),
            "words": words, "words_mask": words != 0,
            "entities": entities, "entities_mask": entities != 0,
            "target": torch.tensor(target)}


def _mim(negatives=0, n_items=3):
    torch.manual_seed(0)
    deps = BuildDeps(path=PATH)
    module = MutualInformationObjective(MutualInformationObjective.Config(word_dim=4, entity_dim=4,
                                                                          negatives=negatives), deps)
    module.item_nodes = torch.arange(5, 5 + n_items)  # items are entity nodes 5, 6, 7
    return module


def _reference_terms(module, inputs):
    """Per-sample positive and negative terms over all nodes, written out from the module docstring."""
    summary = module.transform(module.super_token(inputs["word_nodes"][inputs["words"]], inputs["words_mask"]))
    logits = summary @ inputs["entity_nodes"].t()
    terms = []
    for b in range(len(logits)):
        positives = {int(e) for e in inputs["entities"][b] if e != 0}
        if inputs["target"][b] >= 0:
            positives.add(int(module.item_nodes[inputs["target"][b]]))
        negatives = [e for e in range(1, logits.shape[1]) if e not in positives]
        pos = [F.softplus(-logits[b, e]) for e in sorted(positives)]
        neg = [F.softplus(logits[b, e]) for e in negatives]
        counted = bool(positives) and bool(inputs["words_mask"][b].any())
        terms.append((counted, torch.stack(pos).mean() if pos else None, torch.stack(neg).mean()))
    return terms


def test_mim_over_all_nodes_skips_samples_without_words_or_positives_and_never_uses_the_pad_node():
    module = _mim()
    inputs = _mim_inputs(words=[[1, 2, 0], [3, 0, 0], [0, 0, 0], [4, 5, 0]],
                         entities=[[1, 2, 0], [0, 0, 0], [3, 0, 0], [0, 0, 0]],
                         target=[0, -1, 1, 2])  # sample 1: no positive; sample 2: no words
    terms = _reference_terms(module, inputs)
    expected = torch.stack([p + n for counted, p, n in terms if counted]).mean()
    torch.testing.assert_close(module(inputs)["loss"], expected)
    # moving the pad node's embedding changes nothing: node 0 is neither a positive nor a negative
    inputs["entity_nodes"][0] = 100.0
    torch.testing.assert_close(module(inputs)["loss"], expected)


def test_mim_of_a_batch_where_no_sample_counts_is_a_zero_that_still_backpropagates():
    module = _mim(n_items=0)
    module.item_nodes = torch.zeros(0, dtype=torch.long)
    inputs = _mim_inputs(words=[[1, 2]], entities=[[0, 0]], target=[-1])  # words, but not one positive
    inputs["entity_nodes"].requires_grad_(True)
    loss = module(inputs)["loss"]
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(inputs["entity_nodes"].grad) == 0


def test_sampled_negatives_average_the_valid_draws_and_the_positives_separately():
    module = _mim(negatives=40)
    inputs = _mim_inputs(words=[[1, 2], [3, 0], [0, 0]], entities=[[1, 2], [4, 0], [3, 0]], target=[0, -1, 1])
    torch.manual_seed(7)
    loss = module(inputs)["loss"]
    torch.manual_seed(7)
    draws = torch.randint(1, 8, (3, 40))  # the same draws: uniform over nodes 1..7, never the pad node
    assert all(set(row.tolist()) == set(range(1, 8)) for row in draws)  # the last node is drawn too
    summary = module.transform(module.super_token(inputs["word_nodes"][inputs["words"]], inputs["words_mask"]))
    logits = summary @ inputs["entity_nodes"].t()
    per_sample = []
    for b, positives in enumerate([{1, 2, 5}, {4}, {3, 6}]):
        pos = torch.stack([F.softplus(-logits[b, e]) for e in sorted(positives)]).mean()
        valid = [int(e) for e in draws[b] if int(e) not in positives]  # a draw that hits a positive is dropped
        neg = torch.stack([F.softplus(logits[b, e]) for e in valid]).mean()
        if inputs["words_mask"][b].any():
            per_sample.append(pos + neg)
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())


# ------------------------------------------------------------------ copy targets and decoder masks
def test_word_nodes_copy_their_word_or_its_lower_case_form_never_a_special_token():
    from types import SimpleNamespace

    from crs.data.vocab import SEP, UNK, Vocabulary
    from crs.plugins.kgsf.copy import entity_node_tokens, word_node_tokens

    vocab = Vocabulary(["movie", "Scary", "funny"])
    graph = SimpleNamespace(nodes=["movie", "movie", "Funny", "Scary", "scary", UNK, SEP, "absent"], num_nodes=8)
    tokens = word_node_tokens(graph, vocab).tolist()
    index = vocab.index
    # node 0 is the pad node whatever its name; "Funny" falls back to "funny"; "scary" has no lower-case entry
    assert tokens == [0, index["movie"], index["funny"], index["Scary"], 0, 0, 0, 0]
    items = Vocabulary(["@a", "@c", "@f", "@g", "@h"])
    # item b has no token; d has none and f has one, but their nodes are out of range (9, and 5 = num_nodes);
    # item e (no token) and item g (a token) sit on the pad node: none of them copies
    nodes = entity_node_tokens(5, list("abcdefgh"), torch.tensor([3, 1, 4, 9, 0, 5, 0, 2]), items).tolist()
    assert nodes == [0, 0, items.index["@h"], items.index["@a"], items.index["@c"]]


def test_the_decoder_reads_pad_ids_as_masked_when_no_mask_is_wired(deps):
    torch.manual_seed(0)
    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, word_dim=8, entity_dim=8, heads=2, ffn_dim=16, layers=1), deps)
    decoder.eval()
    batch = make_tiny_batch(deps)
    inputs = {"word_nodes": torch.randn(deps.graphs["word_kg"].num_nodes, 8),
              "entity_nodes": torch.randn(deps.graphs["entity_kg"].num_nodes, 8),
              **{port: batch[p.key] for port, p in decoder.input_ports().items() if p.key in batch}}
    unmasked = {k: v for k, v in inputs.items() if not k.endswith("_mask") or k.startswith("context_tokens")}
    assert "context_words_mask" in inputs and "context_words_mask" not in unmasked
    with torch.no_grad():
        full, derived = decoder.encode(inputs), decoder.encode(unmasked)
    for source in ("words", "entities"):
        (states, mask), (derived_states, derived_mask) = full[source], derived[source]
        assert mask.dtype == torch.bool and not mask.all() and mask.any()  # the tiny batch has padding
        assert torch.equal(derived_mask, mask)
        torch.testing.assert_close(derived_states, states)


def test_mim_divides_by_the_true_count_when_one_negative_or_one_draw_is_left():
    # three nodes: the pad node, a positive (1) and one negative (2); sampled: one draw per sample, seeded so that
    # it draws node 2 (a draw of the positive would be dropped)
    seed = next(s for s in range(100) if torch.randint(1, 3, (1, 1), generator=torch.Generator().manual_seed(s))
                .item() == 2)
    for negatives in (0, 1):
        module = _mim(negatives=negatives, n_items=0)
        module.item_nodes = torch.zeros(0, dtype=torch.long)
        inputs = _mim_inputs(words=[[1, 2]], entities=[[1]], target=[-1], n_entities=3)
        summary = module.transform(module.super_token(inputs["word_nodes"][inputs["words"]], inputs["words_mask"]))
        logits = (summary @ inputs["entity_nodes"].t())[0]
        expected = F.softplus(-logits[1]) + F.softplus(logits[2])
        torch.manual_seed(seed)
        torch.testing.assert_close(module(inputs)["loss"], expected)


def test_mim_runs_in_double_precision():
    module = _mim(negatives=3).double()
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in
              _mim_inputs(words=[[1, 2]], entities=[[1, 2]], target=[0]).items()}
    loss = module(inputs)["loss"]
    assert loss.dtype == torch.float64 and torch.isfinite(loss)


def test_the_decoder_honours_a_wired_mask_that_hides_a_node(deps):
    torch.manual_seed(0)
    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, word_dim=8, entity_dim=8, heads=2, ffn_dim=16, layers=1), deps)
    batch = make_tiny_batch(deps)
    inputs = {"word_nodes": torch.randn(deps.graphs["word_kg"].num_nodes, 8),
              "entity_nodes": torch.randn(deps.graphs["entity_kg"].num_nodes, 8),
              **{port: batch[p.key] for port, p in decoder.input_ports().items() if p.key in batch}}
    hidden = inputs["context_entities_mask"].clone()
    row = int(hidden.any(1).nonzero()[0])
    hidden[row, hidden[row].nonzero()[0]] = False
    with torch.no_grad():
        states, mask = decoder.encode({**inputs, "context_entities_mask": hidden})["entities"]
    assert torch.equal(mask, hidden)
    assert torch.count_nonzero(states[~hidden]) == 0 and torch.count_nonzero(states[hidden]) > 0


def test_the_decoder_names_the_entity_graph_when_its_node_table_does_not_fit(deps):
    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, word_dim=8, entity_dim=8, heads=2, ffn_dim=16, layers=1), deps)
    batch = make_tiny_batch(deps)
    entities = deps.graphs["entity_kg"].num_nodes
    inputs = {"word_nodes": torch.randn(deps.graphs["word_kg"].num_nodes, 8),
              "entity_nodes": torch.randn(entities - 1, 8),
              **{port: batch[p.key] for port, p in decoder.input_ports().items() if p.key in batch}}
    with pytest.raises(ConfigError) as err:
        decoder.encode(inputs)
    assert str(err.value) == (
        f"config key '{PATH}.inputs.entity_nodes': got {entities - 1} node embeddings, but the graph has {entities} "
        "nodes\n  fix: feed the node embeddings of the graph named in `entity_graph`")


def test_segmented_matmul_computes_each_gradient_only_for_inputs_that_need_one():
    rows = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    bounds = ((0, 3), (3, 5))
    for create_graph in (False, True):  # the plain backward and the one written for second order
        (grad_rows,) = torch.autograd.grad(_SegmentedMatmul.apply(rows, weights.detach(), bounds).sum(), [rows],
                                           create_graph=create_graph)
        torch.testing.assert_close(grad_rows[:3], weights[0].detach().sum(1).expand(3, 3))
        (grad_weights,) = torch.autograd.grad(_SegmentedMatmul.apply(rows.detach(), weights, bounds).sum(),
                                              [weights], create_graph=create_graph)
        torch.testing.assert_close(grad_weights[1], rows[3:].detach().sum(0)[:, None].expand(3, 2))


def test_segmented_matmul_refuses_sizes_that_do_not_cover_the_rows():
    from crs.plugins.kgsf.rgcn import segmented_matmul

    with pytest.raises(ValueError) as err:
        segmented_matmul(torch.zeros(5, 2), torch.zeros(3, 2, 2), [1, 1, 1])
    assert str(err.value) == "segment sizes sum to 3, rows have 5"
    with pytest.raises(ValueError) as err:
        segmented_matmul(torch.zeros(5, 2), torch.zeros(0, 2, 2), [])
    assert str(err.value) == "segment sizes sum to 0, rows have 5"


def test_an_rgcn_without_bias_has_none_and_still_runs():
    world = _world()
    for featureless in (False, True):
        module = EntityGraphRGCN(EntityGraphRGCN.Config(dim=4, num_bases=2, bias=False, featureless=featureless),
                                 world)
        assert module.layers[0].bias is None
        assert module.encode().shape == (world.graphs["entity_kg"].num_nodes, 4)


def test_glorot_init_is_uniform_over_the_fan_of_the_last_two_axes():
    from crs.plugins.kgsf.rgcn import glorot_

    torch.manual_seed(0)
    weight = torch.empty(4, 30, 20)
    glorot_(weight)
    bound = (6.0 / 50) ** 0.5
    assert weight.abs().max() <= bound and weight.max() > 0.98 * bound and weight.min() < -0.98 * bound


def test_a_featureless_rgcn_gives_a_row_to_nodes_after_the_last_edge_target():
    # the last node receives no edge: its row is its root term (plus bias), not missing
    kg = KnowledgeGraph(ENTITY, ["a", "b", "c", "d"], ["r"], np.array([0, 1]), np.array([0, 0]), np.array([1, 0]))
    world = BuildDeps(path=PATH, graphs={"entity_kg": IndexedGraph.from_graph("entity_kg", kg)})
    torch.manual_seed(0)
    module = EntityGraphRGCN(EntityGraphRGCN.Config(dim=3, num_bases=1, featureless=True), world)
    out = module.encode()
    layer = module.layers[0]
    assert out.shape == (5, 3)
    torch.testing.assert_close(out[4], layer.root[4] + layer.bias)


def test_copy_log_probs_are_minus_infinity_on_tokens_no_copyable_node_has():
    from crs.plugins.kgsf.copy import CopyMixture

    torch.manual_seed(0)
    mixture = CopyMixture(4)
    log_probs = mixture.copy_log_probs(torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.tensor([[5, 7, 9]]),
                                       torch.tensor([[True, True, False]]), vocab_size=10)
    finite = torch.isfinite(log_probs[0, 0])
    assert finite.nonzero().flatten().tolist() == [5, 7]
    assert torch.equal(log_probs[0, 0, ~finite], torch.full((8,), float("-inf")))
    torch.testing.assert_close(log_probs[0].exp().sum(-1), torch.ones(2))


def test_user_encoder_sizes_follow_their_config(deps):
    pool = SelfAttentionPoolEncoder(SelfAttentionPoolEncoder.Config(dim=4, hidden=3), deps).pool
    assert pool.project.weight.shape == (3, 4)
    assert SelfAttentionPoolEncoder(SelfAttentionPoolEncoder.Config(dim=4), deps).pool.project.weight.shape == (4, 4)
    assert GateUserEncoder(GateUserEncoder.Config(dim=4), deps).gate.out_features == 4
    assert GateUserEncoder(GateUserEncoder.Config(dim=4, scalar_gate=True), deps).gate.out_features == 1


def test_without_item_bias_the_recommender_has_no_bias(deps):
    module = DotProductRecommender(DotProductRecommender.Config(dim=4), deps)
    assert module.bias is None and "bias" not in module.state_dict()


def test_relation_ids_beyond_the_relation_names_are_a_data_error():
    # KnowledgeGraph refuses such edges itself; the R-GCN checks again for graphs indexed some other way
    from types import SimpleNamespace

    from crs.errors import DataError

    stub = SimpleNamespace(num_nodes=3, num_relations=2, src=np.array([0, 1]), dst=np.array([1, 2]),
                           rel=np.array([0, 2]))
    world = BuildDeps(path=PATH, graphs={"entity_kg": stub})

    with pytest.raises(DataError) as err:
        EntityGraphRGCN(EntityGraphRGCN.Config(dim=2, num_bases=1), world)
    assert str(err.value) == ("knowledge graph 'entity_kg': relation id 2 but only 2 relation names\n"
                              "  fix: the knowledge source must index relations 0..len(relations)-1")
    one = KnowledgeGraph(ENTITY, ["a", "b"], ["r0"], np.array([0]), np.array([0]), np.array([1]))
    world = BuildDeps(path=PATH, graphs={"entity_kg": IndexedGraph.from_graph("entity_kg", one)})
    module = EntityGraphRGCN(EntityGraphRGCN.Config(dim=2, num_bases=1), world)
    assert module.num_relations == 1 and module.layers[0].coefficients.shape == (1, 1)


def test_copy_attention_is_a_softmax_of_scaled_dot_products_over_copyable_nodes():
    from crs.plugins.kgsf.copy import CopyMixture

    torch.manual_seed(0)
    mixture = CopyMixture(4)
    hidden, nodes = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    copyable = torch.tensor([[True, False, True]])
    scores = mixture.query(hidden) @ nodes.transpose(1, 2) / 2.0  # sqrt(dim) = 2
    expected = torch.softmax(scores[..., [0, 2]], dim=-1)
    attention = mixture.attention(hidden, nodes, copyable)
    torch.testing.assert_close(attention[..., [0, 2]], expected)
    assert torch.equal(attention[..., 1], torch.zeros(1, 2))


def test_a_top_level_key_is_named_whole_in_the_fix():
    from crs.plugins.kgsf.graph_common import check_non_negative, check_positive

    with pytest.raises(ConfigError) as err:
        check_positive(0, "dim", "dim")
    assert str(err.value).endswith("fix: set dim: 1 or more")
    with pytest.raises(ConfigError) as err:
        check_non_negative(-1, "layers", "layers")
    assert str(err.value).endswith("fix: set layers: 0 or more")


def test_the_decoder_names_its_bad_sizes_and_missing_graphs(deps):
    small = {"dim": 8, "heads": 2, "ffn_dim": 16, "layers": 1}
    with pytest.raises(ConfigError) as err:
        KGSFDecoder(KGSFDecoder.Config(**small, word_dim=0), deps)
    assert str(err.value) == f"config key '{PATH}.word_dim': must be a positive integer, got 0"
    with pytest.raises(ConfigError) as err:
        KGSFDecoder(KGSFDecoder.Config(**small, entity_graph="dbpedia"), deps)
    assert err.value.path == f"{PATH}.entity_graph" and "no knowledge graph named 'dbpedia'" in str(err.value)


def test_without_an_item_index_no_entity_node_copies(deps):
    from dataclasses import replace

    decoder = KGSFDecoder(KGSFDecoder.Config(dim=8, heads=2, ffn_dim=16, layers=1), replace(deps, items=None))
    assert decoder.entity_tokens.dtype == torch.long
    assert torch.equal(decoder.entity_tokens, torch.zeros(deps.graphs["entity_kg"].num_nodes, dtype=torch.long))
