"""KGSF graph encoders `gcn` (Eq. 1) and `rgcn` (Eq. 2) against dense references and PyG."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, WORD, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.gcn import WordGraphGCN
from crs.plugins.kgsf.rgcn import EntityGraphRGCN


def random_graph(name: str, role: str, nodes: int = 25, relations: int = 4, edges: int = 90, seed: int = 0):
    rng = np.random.default_rng(seed)
    kg = KnowledgeGraph(role, [f"n{i}" for i in range(nodes)], [f"r{i}" for i in range(relations)],
                        rng.integers(0, nodes, edges), rng.integers(0, relations, edges),
                        rng.integers(0, nodes, edges))
    return IndexedGraph.from_graph(name, kg)


@pytest.fixture
def deps():
    torch.manual_seed(0)
    return BuildDeps(path="model.enc", graphs={"entity_kg": random_graph("entity_kg", ENTITY),
                                               "word_kg": random_graph("word_kg", WORD, relations=2, seed=1)})


def directed_with_reverses(graph: IndexedGraph):
    keep = graph.src != graph.dst
    s, d, r = graph.src[keep], graph.dst[keep], graph.rel[keep]
    return np.concatenate([s, d]), np.concatenate([d, s]), np.concatenate([r, r])


def dense_rgcn(module: EntityGraphRGCN, graph: IndexedGraph, aggregation: str, act) -> torch.Tensor:
    """Eq. 2 with explicit per-relation adjacency matrices."""
    n = graph.num_nodes
    src, dst, rel = directed_with_reverses(graph)
    h = module.embeddings.weight
    for layer in module.layers:
        weights = torch.einsum("rb,bio->rio", layer.coefficients, layer.bases)
        out = h @ layer.root + layer.bias
        for r in range(graph.num_relations):
            adjacency = torch.zeros(n, n)
            for u, v, t in zip(src, dst, rel):
                if t == r:
                    adjacency[v, u] += 1.0
            if aggregation == "mean":
                adjacency = adjacency / adjacency.sum(1, keepdim=True).clamp(min=1)
            out = out + adjacency @ h @ weights[r]
        h = act(out)
    return h


@pytest.mark.parametrize("aggregation,activation,layers", [("mean", "none", 1), ("sum", "relu", 2)])
def test_rgcn_matches_dense_reference(deps, aggregation, activation, layers):
    config = EntityGraphRGCN.Config(dim=8, num_bases=3, layers=layers, aggregation=aggregation, activation=activation)
    module = EntityGraphRGCN(config, deps)
    out = module({})["nodes"]
    act = torch.relu if activation == "relu" else (lambda x: x)
    expected = dense_rgcn(module, deps.graphs["entity_kg"], aggregation, act)
    assert out.shape == (deps.graphs["entity_kg"].num_nodes, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_gcn_matches_dense_reference(deps):
    graph = deps.graphs["word_kg"]
    module = WordGraphGCN(WordGraphGCN.Config(dim=6, layers=2, activation="tanh"), deps)
    n = graph.num_nodes
    adjacency = torch.zeros(n, n)
    adjacency[graph.src, graph.dst] = 1.0
    adjacency = ((adjacency + adjacency.t()) > 0).float()  # undirected, duplicates collapse
    adjacency.fill_diagonal_(1.0)  # exactly one self-loop per node
    d = adjacency.sum(1).rsqrt()
    norm = d[:, None] * adjacency * d[None, :]
    h = module.embeddings.weight
    for linear, bias in zip(module.weights, module.biases):
        h = torch.tanh(norm @ linear(h) + bias)
    torch.testing.assert_close(module({})["nodes"], h, atol=1e-5, rtol=1e-5)


def test_gradients_reach_embeddings_and_weights(deps):
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=8, num_bases=2), deps)
    gcn = WordGraphGCN(WordGraphGCN.Config(dim=8), deps)
    (rgcn({})["nodes"].pow(2).sum() + gcn({})["nodes"].pow(2).sum()).backward()
    for name, param in [*rgcn.named_parameters(), *gcn.named_parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert rgcn.embeddings.weight.grad[0].abs().sum() == 0  # pad row stays fixed


def test_ports_and_config_errors(deps):
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=16), deps)
    gcn = WordGraphGCN(WordGraphGCN.Config(dim=12), deps)
    assert rgcn.output_ports()["nodes"].key == "entity_nodes" and rgcn.output_ports()["nodes"].dim == 16
    assert gcn.output_ports()["nodes"].key == "word_nodes" and gcn.output_ports()["nodes"].dim == 12
    with pytest.raises(ConfigError, match="no knowledge graph named 'missing'"):
        WordGraphGCN(WordGraphGCN.Config(graph="missing"), deps)
    with pytest.raises(ConfigError, match="model.enc.activation"):
        EntityGraphRGCN(EntityGraphRGCN.Config(activation="gelu"), deps)
    with pytest.raises(ConfigError, match="model.enc.aggregation"):
        EntityGraphRGCN(EntityGraphRGCN.Config(aggregation="max"), deps)
    assert "edge_src" not in rgcn.state_dict()  # graph structure is data, not checkpoint state


def test_pyg_layers_give_equal_outputs(deps):
    pyg = pytest.importorskip("torch_geometric.nn")
    entity, word = deps.graphs["entity_kg"], deps.graphs["word_kg"]
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=8, num_bases=3), deps)
    conv = pyg.RGCNConv(8, 8, entity.num_relations, num_bases=3)
    layer = rgcn.layers[0]
    with torch.no_grad():
        conv.weight.copy_(layer.bases), conv.comp.copy_(layer.coefficients)
        conv.root.copy_(layer.root), conv.bias.copy_(layer.bias)
    src, dst, rel = directed_with_reverses(entity)
    expected = conv(rgcn.embeddings.weight, torch.from_numpy(np.stack([src, dst])), torch.from_numpy(rel))
    torch.testing.assert_close(rgcn({})["nodes"], expected, atol=1e-5, rtol=1e-5)

    gcn = WordGraphGCN(WordGraphGCN.Config(dim=8), deps)
    gconv = pyg.GCNConv(8, 8)
    with torch.no_grad():
        gconv.lin.weight.copy_(gcn.weights[0].weight), gconv.bias.copy_(gcn.biases[0])
    keep = word.src != word.dst
    pairs = np.unique(np.concatenate([np.stack([word.src[keep], word.dst[keep]], 1),
                                      np.stack([word.dst[keep], word.src[keep]], 1)]), axis=0)
    expected = gconv(gcn.embeddings.weight, torch.from_numpy(pairs.T.copy()))
    torch.testing.assert_close(gcn({})["nodes"], expected, atol=1e-5, rtol=1e-5)


def test_zero_layers_give_plain_embeddings(deps):
    # the KGSF "-DB" ablation in registry.yaml uses an R-GCN with layers: 0
    rgcn = EntityGraphRGCN(EntityGraphRGCN.Config(dim=8, layers=0), deps)
    assert torch.equal(rgcn({})["nodes"], rgcn.embeddings.weight)
    with pytest.raises(ConfigError, match="model.enc.layers"):
        WordGraphGCN(WordGraphGCN.Config(layers=-1), deps)


def test_segmented_matmul_gradients_match_autograd():
    from crs.plugins.kgsf.rgcn import segmented_matmul

    rows = torch.randn(9, 3, dtype=torch.double, requires_grad=True)
    weights = torch.randn(4, 3, 2, dtype=torch.double, requires_grad=True)
    sizes = [2, 0, 4, 3]  # an empty segment (a relation without pairs) included
    assert torch.autograd.gradcheck(lambda r, w: segmented_matmul(r, w, sizes), (rows, weights))
    expected = torch.cat([rows[0:2] @ weights[0], rows[2:6] @ weights[2], rows[6:9] @ weights[3]])
    torch.testing.assert_close(segmented_matmul(rows, weights, sizes), expected)
    with pytest.raises(ValueError, match="segment sizes"):
        segmented_matmul(rows, weights, [1, 1, 1, 1])
