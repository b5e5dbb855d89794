"""KGSF's KG-enhanced Transformer decoder with the copy mechanism (paper section 4.4, Eq. 10-19).

Type ``kgsf_decoder`` (generator kind).  The context tokens go through a standard
Transformer encoder.  Each decoder layer then runs (Eq. 10-14)

    self-attention over the reply prefix
    -> cross-attention to the word-graph node embeddings of the context words V(C)
    -> cross-attention to the entity-graph node embeddings of the context entities N(C)
    -> cross-attention to the encoder states
    -> feed-forward,

each with a residual connection and LayerNorm.  With ``copy: true`` the output is the
gated mixture of Eq. 18 (see :mod:`crs.plugins.kgsf.copy`); ``copy: false`` gives the
"w/o copy" ablation (Pr1 only; the KG attention stays).  The loss is Eq. 19: the mean
negative log-likelihood of the reply tokens.

Ports (local name -> default key), besides the plain generator's (tokens, tokens_mask,
response, response_mask; outputs loss.gen, nll_sum, nll_count, logits):

=================  ===============================  ==========================================
word_nodes         word_nodes                       (N_w, word_dim) word-graph node embeddings
entity_nodes       entity_nodes                     (N_e, entity_dim) entity-graph node embeddings
context_words      batch.context_words              (B, W) word-node ids; mask: ..._mask
context_entities   batch.context_entities           (B, E) entity-node ids; mask: ..._mask
=================  ===============================  ==========================================

The node embeddings are inputs, so when a stage trains the graph-encoder slots too,
gradients reach them; KGSF itself freezes them in the conversation stage (stage config).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, Port
from crs.nn import Memory
from crs.nn.seq2seq import TransformerGenerator

from .copy import CopyMixture, entity_node_tokens, word_node_tokens


class KGSFDecoder(TransformerGenerator):
    """Transformer encoder + KG-enhanced decoder (words -> entities -> context) + copy mixture."""

    @dataclass
    class Config(TransformerGenerator.Config):
        word_graph: str = "word_kg"  # knowledge name of the word graph (ConceptNet)
        entity_graph: str = "entity_kg"  # knowledge name of the entity graph (DBpedia)
        copy: bool = True  # False: the "w/o copy" ablation (vocabulary softmax only)
        word_dim: int = 128  # dim of the incoming word node embeddings (projected to dim if different)
        entity_dim: int = 128  # dim of the incoming entity node embeddings

    def __init__(self, config: Any, deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("word_dim", "entity_dim"), self.path)
        word_graph = deps.graph(config.word_graph, "word_graph")
        entity_graph = deps.graph(config.entity_graph, "entity_graph")
        self.num_word_nodes, self.num_entity_nodes = word_graph.num_nodes, entity_graph.num_nodes
        dim = config.dim
        self.word_proj = nn.Linear(config.word_dim, dim) if config.word_dim != dim else nn.Identity()
        self.entity_proj = nn.Linear(config.entity_dim, dim) if config.entity_dim != dim else nn.Identity()
        self.copy = CopyMixture(dim) if config.copy else None
        vocab = deps.require("vocab")
        # Node -> vocab token maps are data, not parameters: buffers follow .to(device) but
        # are rebuilt from the graphs and vocabulary rather than trusted from a checkpoint.
        self.register_buffer("word_tokens", word_node_tokens(word_graph, vocab), persistent=False)
        if deps.items is not None:
            entity_tokens = entity_node_tokens(entity_graph.num_nodes, deps.items.ids, deps.items.entity_nodes, vocab)
        else:
            entity_tokens = torch.zeros(entity_graph.num_nodes, dtype=torch.long)
        self.register_buffer("entity_tokens", entity_tokens, persistent=False)

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        ports = super().input_ports()
        ports.update({
            "word_nodes": Port("word_nodes", self.config.word_dim, doc="word-graph node embeddings"),
            "entity_nodes": Port("entity_nodes", self.config.entity_dim, doc="entity-graph node embeddings"),
            "context_words": Port("batch.context_words", doc="word-node ids of the context"),
            "context_words_mask": Port("batch.context_words_mask"),
            "context_entities": Port("batch.context_entities", doc="entity-node ids of the context"),
            "context_entities_mask": Port("batch.context_entities_mask"),
        })
        return ports

    # ------------------------------------------------------ generator hooks
    def memory_sources(self) -> tuple[str, ...]:
        return ("words", "entities", "encoder")  # Eq. 11-13, in the paper's order

    def encode(self, inputs: dict[str, Any]) -> dict[str, Memory]:
        memories = super().encode(inputs)
        memories["words"] = self._node_memory(inputs, "word_nodes", "context_words", self.word_proj,
                                              self.num_word_nodes, "word_graph")
        memories["entities"] = self._node_memory(inputs, "entity_nodes", "context_entities", self.entity_proj,
                                                 self.num_entity_nodes, "entity_graph")
        return memories

    def _node_memory(self, inputs: dict[str, Any], nodes_port: str, index_port: str, proj: nn.Module,
                     num_nodes: int, graph_key: str) -> Memory:
        """Projected embeddings of the context's nodes (B, N, dim), zero on padding, and their mask."""
        nodes, index = inputs[nodes_port], inputs[index_port]
        mask = inputs.get(f"{index_port}_mask")
        mask = index != 0 if mask is None else mask.bool()
        if nodes.size(0) != num_nodes:
            raise ConfigError(f"{self.path}.inputs.{nodes_port}",
                              f"got {nodes.size(0)} node embeddings, but the graph has {num_nodes} nodes",
                              f"feed the node embeddings of the graph named in `{graph_key}`")
        return proj(nodes[index]) * mask.unsqueeze(-1), mask

    def token_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory],
                        inputs: dict[str, Any]) -> torch.Tensor:
        vocab_log_probs = self.vocab_log_probs(hidden, inputs)  # Pr1, through the one logits hook
        if self.copy is None:
            return vocab_log_probs
        return self.copy(hidden, vocab_log_probs, *self._copy_nodes(memories, inputs))

    def target_log_probs(self, hidden: torch.Tensor, memories: dict[str, Memory], inputs: dict[str, Any],
                         targets: torch.Tensor) -> torch.Tensor:
        vocab_log_probs = self.vocab_log_probs(hidden, inputs)
        target_vocab = vocab_log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if self.copy is None:
            return target_vocab
        return self.copy.target_log_probs(hidden, target_vocab, *self._copy_nodes(memories, inputs), targets)

    def _copy_nodes(self, memories: dict[str, Memory], inputs: dict[str, Any]):
        """The context's node states (B, N, D), their vocab tokens (B, N) and which can be copied (B, N)."""
        (word_states, word_mask), (entity_states, entity_mask) = memories["words"], memories["entities"]
        nodes = torch.cat([word_states, entity_states], dim=1)
        node_tokens = torch.cat([self.word_tokens[inputs["context_words"]],
                                 self.entity_tokens[inputs["context_entities"]]], dim=1)
        copyable = torch.cat([word_mask, entity_mask], dim=1) & (node_tokens != 0)
        return nodes, node_tokens, copyable
