"""`rgcn` with ``featureless: true`` (KGSF's and C2-CRS's released R-GCN: PyG RGCNConv with x=None)
against a dense one-hot reference (outputs and gradients) and against PyG itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crs.errors import ConfigError
from crs.interfaces import BuildDeps
from crs.knowledge import ENTITY, IndexedGraph, KnowledgeGraph
from crs.plugins.kgsf.rgcn import EntityGraphRGCN, FeaturelessRelationalLayer

RELATIONS, BASES, DIM = 3, 2, 4
NODES = 10  # nine named nodes and the pad node 0 IndexedGraph puts first


def tiny_graph(edges: int = 20, seed: int = 3) -> IndexedGraph:
    rng = np.random.default_rng(seed)
    kg = KnowledgeGraph(ENTITY, [f"n{i}" for i in range(NODES - 1)], [f"r{i}" for i in range(RELATIONS)],
                        rng.integers(0, NODES - 1, edges), rng.integers(0, RELATIONS, edges),
                        rng.integers(0, NODES - 1, edges))
    return IndexedGraph.from_graph("entity_kg", kg)


def build(**config) -> EntityGraphRGCN:
    torch.manual_seed(0)
    deps = BuildDeps(path="model.entity_encoder", graphs={"entity_kg": tiny_graph()})
    node = {"dim": DIM, "num_bases": BASES, "featureless": True, **config}
    module = EntityGraphRGCN(EntityGraphRGCN.Config(**node), deps).double()
    with torch.no_grad():  # a non-zero bias, so that a dropped bias term shows
        for layer in module.layers:
            layer.bias.normal_()
    return module


def edges_with_reverses(graph: IndexedGraph):
    keep = graph.src != graph.dst
    s, d, r = graph.src[keep], graph.dst[keep], graph.rel[keep]
    return np.concatenate([s, d]), np.concatenate([d, s]), np.concatenate([r, r])


def dense_reference(layer: FeaturelessRelationalLayer, graph: IndexedGraph, aggregation: str) -> torch.Tensor:
    """The layer as R-GCN writes it for one-hot inputs X = I: sum_r A_r X W_r + X root + b, all dense."""
    n = graph.num_nodes
    one_hot = torch.eye(n, dtype=torch.float64)
    weights = torch.einsum("rb,bnd->rnd", layer.coefficients, layer.bases)  # (R, N, d): every W_r in full
    out = one_hot @ layer.root + layer.bias
    src, dst, rel = edges_with_reverses(graph)
    for r in range(RELATIONS):
        adjacency = torch.zeros(n, n, dtype=torch.float64)
        for u, v, t in zip(src, dst, rel):
            if t == r:
                adjacency[v, u] += 1.0
        if aggregation == "mean":
            adjacency = adjacency / adjacency.sum(1, keepdim=True).clamp(min=1)
        out = out + adjacency @ one_hot @ weights[r]
    return out


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_featureless_layer_equals_the_dense_one_hot_reference_with_gradients(aggregation):
    module = build(aggregation=aggregation)
    graph = tiny_graph()
    assert graph.num_nodes == NODES
    layer = module.layers[0]
    ours = module({})["nodes"]
    expected = dense_reference(layer, graph, aggregation)
    torch.testing.assert_close(ours, expected, atol=1e-7, rtol=1e-6)
    # tolerance 1e-7: the 1/c edge weights are float32.  Gradients of one scalar through both, every parameter:
    probe = torch.randn(NODES, DIM, dtype=torch.float64)
    params = [layer.bases, layer.coefficients, layer.root, layer.bias]
    ours_grads = torch.autograd.grad((ours * probe).sum(), params)
    dense_grads = torch.autograd.grad((dense_reference(layer, graph, aggregation) * probe).sum(), params)
    for name, a, b in zip(["bases", "coefficients", "root", "bias"], ours_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6, msg=name)
        assert a.abs().sum() > 0, name


def test_featureless_equals_pyg_rgcnconv_without_input_features():
    pyg = pytest.importorskip("torch_geometric.nn")
    module = build()
    layer = module.layers[0]
    conv = pyg.RGCNConv(NODES, DIM, RELATIONS, num_bases=BASES).double()
    with torch.no_grad():  # the same layout as PyG, so the weights copy over unchanged
        conv.weight.copy_(layer.bases), conv.comp.copy_(layer.coefficients)
        conv.root.copy_(layer.root), conv.bias.copy_(layer.bias)
    src, dst, rel = edges_with_reverses(tiny_graph())
    expected = conv(None, torch.from_numpy(np.stack([src, dst])), torch.from_numpy(rel))
    torch.testing.assert_close(module({})["nodes"], expected, atol=1e-7, rtol=1e-6)


def test_second_layer_and_activation_follow_the_featureless_first():
    module = build(layers=2, activation="relu")
    first, second = module.layers
    assert isinstance(first, FeaturelessRelationalLayer) and not isinstance(second, FeaturelessRelationalLayer)
    h = torch.relu(dense_reference(first, tiny_graph(), "mean"))
    out = module({})["nodes"]
    # the second layer on the first's output equals the module's output (the dense check of the
    # ordinary layer lives in test_graph_encoders)
    graph = module._graphs.get(module.edge_src.device)
    expected = torch.relu(second(h, graph, module.edge_weight, module.pair_dst, module.pairs_per_relation))
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=1e-6)


def test_no_node_embeddings_and_the_parameter_count_is_per_node():
    module = build()
    assert module.embeddings is None
    expected = BASES * NODES * DIM + RELATIONS * BASES + NODES * DIM + DIM
    assert sum(p.numel() for p in module.parameters()) == expected
    plain = EntityGraphRGCN(EntityGraphRGCN.Config(dim=DIM, num_bases=BASES),
                            BuildDeps(path="m", graphs={"entity_kg": tiny_graph()}))
    assert sum(p.numel() for p in plain.parameters()) == NODES * DIM + BASES * DIM * DIM + RELATIONS * BASES \
        + DIM * DIM + DIM
    assert "bases" in dict(module.layers[0].named_parameters())
    graph_buffers = {"edge_src", "edge_pair", "pair_dst", "edge_weight", "lookup_rows", "lookup_offsets",
                     "lookup_rel", "lookup_weight"}
    assert graph_buffers <= {name for name, _ in module.named_buffers()}  # they exist ...
    assert not graph_buffers & set(module.state_dict())  # ... but graph structure is data, not checkpoint state


def test_featureless_needs_a_layer():
    with pytest.raises(ConfigError, match="model.entity_encoder.layers"):
        build(layers=0)


def test_first_order_only_as_documented():
    """embedding_bag has no double backward: differentiating the layer's gradient again fails loudly, never
    silently wrong (a MAML inner loop must not adapt it; adapting the slots after it is fine)."""
    module = build()
    layer = module.layers[0]
    (grad_bases,) = torch.autograd.grad(module({})["nodes"].pow(2).sum(), [layer.bases], create_graph=True)
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.autograd.grad(grad_bases.pow(2).sum(), [layer.coefficients])
