"""The ``hf_causal_lm`` generator: a Hugging Face causal language model writing the reply.

Type ``hf_causal_lm`` (generator kind).  The model comes from ``source`` through
:func:`crs.plm.load_causal_lm` (a local folder, ``package:<pip package>[/subdir]``, a
cached hub id; ``gguf_file`` for a quantised checkpoint, ``random_init`` for fresh
weights of the same architecture).  Its tokenizer, with ``special_tokens`` and
``item_placeholder`` added, must be the one the ``plm_tokens`` featurizer used
(same source and keys): the embeddings are resized to it, and the batch holds that
featurizer's ids, so nothing is tokenized in a forward pass.

Ports (local name -> default key; ``<p>`` is ``prefix``, default ``plm``):

================  =============================  =======================================
inputs
context           batch.<p>_context_ids          (B, L) right-padded context ids
context_mask      batch.<p>_context_ids_mask     (B, L) bool
response          batch.<p>_response_ids         optional, (B, R): reply ids, EOS last
response_mask     batch.<p>_response_ids_mask    optional, (B, R) bool
outputs (only when a response is given)
loss.gen          loss.gen                       mean cross-entropy over reply tokens
nll_sum           nll_sum                        float, summed NLL of reply sub-tokens
nll_count         nll_count                      float, number of reply sub-tokens
================  =============================  =======================================

Perplexity is per *sub-token* of this tokenizer (``ppl_unit``), not per word: the
report names the unit, and it is comparable only between models sharing a tokenizer.

Teacher forcing: each row is laid out as ``[pad .. context | reply .. pad]`` (the
context moved to the left of its padding) so that context and reply are contiguous;
positions count real tokens only; the loss covers the reply tokens (EOS included).
``generate_text`` decodes greedily up to EOS or ``max_len`` tokens and replaces the
k-th ``item_placeholder`` of a reply by the k-th item the recommender ranks
(``inputs["recommend"]``); without a recommender the placeholders stay in the text.
``generate`` returns the same replies as ids of the pipeline's word vocabulary.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from crs.errors import ConfigError
from crs.interfaces import BuildDeps, Generator, Port
from crs.nn import token_nll
from crs.plm import fill_placeholders, load_causal_lm, load_tokenizer

from .featurizer import added_tokens


def left_align(ids: torch.Tensor, mask: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) rows -> the same rows left-padded (real tokens at the end)."""
    mask = mask.bool()
    width = ids.size(1)
    shift = (width - mask.sum(dim=1)).unsqueeze(1)  # (B, 1): pads to put in front
    positions = torch.arange(width, device=ids.device).unsqueeze(0)
    source = (positions - shift).clamp(min=0)
    real = positions >= shift
    return torch.where(real, ids.gather(1, source), torch.full_like(ids, pad)), real


class HFCausalLM(Generator):
    """A pretrained (or freshly initialised) causal LM fine-tuned to write the recommender's reply."""

    ppl_unit = "subtoken"  # nll_count counts tokenizer sub-tokens (crs.evaluation reports gen.ppl/subtoken)
    # The component contract (crs.testing.check_contract) builds it from the tiny description shipped
    # with crs.  Its tiny batch has no plm_tokens fields, so the example reads the word-id fields: the
    # contract checks ports, shapes and gradients, for which any ids below the tokenizer's size do.
    contract_node: ClassVar[dict] = {
        "source": "package:crs.tiny_models.causal_lm", "random_init": True,
        "inputs": {"context": "batch.context_tokens", "context_mask": "batch.context_tokens_mask",
                   "response": "batch.response_tokens", "response_mask": "batch.response_tokens_mask"}}

    @dataclass
    class Config:
        source: str = ""  # HF model id, local folder, or package:<pip package>[/subdir]
        gguf_file: Optional[str] = None  # a .gguf file inside `source` (needs the gguf package)
        random_init: bool = False  # the source's architecture with fresh weights (tests, from-scratch runs)
        tokenizer: Optional[str] = None  # default: `source`; must match the plm_tokens featurizer's
        special_tokens: list[str] = field(default_factory=list)  # as in the plm_tokens featurizer
        item_placeholder: Optional[str] = "[MOVIE_ID]"  # as in the plm_tokens featurizer; null: no filling
        prefix: str = "plm"  # the plm_tokens featurizer's prefix: reads batch.<prefix>_context_ids, ...
        label_smoothing: float = 0.0  # on loss.gen only; nll_sum stays plain

    def __init__(self, config: "HFCausalLM.Config", deps: BuildDeps):
        super().__init__(config, deps)
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ConfigError(f"{self.path}.label_smoothing", f"must be in [0, 1), got {config.label_smoothing}")
        if not config.prefix.isidentifier():
            raise ConfigError(f"{self.path}.prefix", f"'{config.prefix}' cannot start a field name",
                              "use the plm_tokens featurizer's prefix (default plm)")
        self.vocab = deps.vocab
        self.item_ids = list(deps.items.ids) if deps.items is not None else []
        self.model = load_causal_lm(config.source, config.gguf_file, random_init=config.random_init,
                                    key=f"{self.path}.source")
        key = f"{self.path}.tokenizer" if config.tokenizer else f"{self.path}.source"
        self.tokenizer = load_tokenizer(config.tokenizer or config.source, key=key, gguf_file=config.gguf_file,
                                        special_tokens=added_tokens(config.special_tokens, config.item_placeholder))
        self._resize_embeddings()
        tok = self.tokenizer
        self.pad, self.eos = int(tok.pad_token_id), int(tok.eos_token_id)
        self.placeholder = config.item_placeholder
        placeholder_id = tok.convert_tokens_to_ids(self.placeholder) if self.placeholder else None
        # Special tokens other than the placeholder never belong in reply text.
        self._hidden = {int(i) for i in tok.all_special_ids} - {placeholder_id}
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    @property
    def pretrained(self) -> bool:
        """Loaded weights (not ``random_init``): the evaluator reports this generator's perplexity untrained too."""
        return not self.config.random_init

    def _resize_embeddings(self) -> None:
        """Give every tokenizer id an embedding row (added tokens); models with spare rows keep theirs."""
        rows = self.model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > rows:
            self.model.resize_token_embeddings(len(self.tokenizer))

    # ----------------------------------------------------------------- ports
    def input_ports(self) -> dict[str, Port]:
        p = f"batch.{self.config.prefix}"
        return {
            "context": Port(f"{p}_context_ids", doc="context sub-token ids (plm_tokens featurizer)"),
            "context_mask": Port(f"{p}_context_ids_mask"),
            "response": Port(f"{p}_response_ids", optional=True, doc="reply sub-token ids, EOS last"),
            "response_mask": Port(f"{p}_response_ids_mask", optional=True),
        }

    def output_ports(self) -> dict[str, Port]:
        return {
            "loss.gen": Port("loss.gen", optional=True, doc="mean cross-entropy over reply sub-tokens"),
            "nll_sum": Port("nll_sum", optional=True, doc="summed reply sub-token NLL (perplexity)"),
            "nll_count": Port("nll_count", optional=True, doc="number of reply sub-tokens"),
        }

    # ------------------------------------------------------------- running
    def _check_ids(self, *tensors: torch.Tensor) -> None:
        rows = self.model.get_input_embeddings().weight.shape[0]
        top = max(int(t.max()) for t in tensors if t.numel())
        if top >= rows:
            raise ConfigError(f"{self.path}.tokenizer", f"the batch holds token id {top}, but the model has only "
                              f"{rows} embeddings: the batch was tokenized with another tokenizer",
                              "give this generator and the plm_tokens featurizer the same tokenizer, "
                              "special_tokens and item_placeholder")

    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        response = inputs.get("response")
        if response is None:
            return {}  # nothing to score; replies come from generate_text
        context, context_mask = inputs["context"], inputs["context_mask"].bool()
        response_mask = inputs.get("response_mask")
        response_mask = torch.ones_like(response, dtype=torch.bool) if response_mask is None else response_mask.bool()
        self._check_ids(context, response)
        left, left_mask = left_align(context, context_mask, self.pad)
        ids = torch.cat([left, response], dim=1)
        attention = torch.cat([left_mask, response_mask], dim=1).long()
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        width = response.size(1)
        # Reply token j is predicted at position L-1+j: the last width+1 positions bar the final one.
        extra = {"logits_to_keep": width + 1} if self._logits_to_keep else {}
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, **extra).logits
        log_probs = F.log_softmax(logits[:, -(width + 1):-1].float(), dim=-1)
        stats = token_nll(log_probs, response, response_mask, self.config.label_smoothing)
        return {"loss.gen": stats["loss"], "nll_sum": stats["nll_sum"], "nll_count": stats["nll_count"]}

    @torch.no_grad()
    def generate_ids(self, inputs: dict[str, Any], max_len: int) -> torch.Tensor:
        """Greedy reply sub-token ids (B, T <= max_len), EOS kept, pad after it."""
        from transformers import GenerationConfig

        context, mask = inputs["context"], inputs["context_mask"]
        self._check_ids(context)
        left, left_mask = left_align(context, mask, self.pad)
        # An explicit config: a checkpoint's own generation settings (sampling, temperature) must not apply.
        settings = GenerationConfig(max_new_tokens=max(1, int(max_len)), do_sample=False, num_beams=1,
                                    eos_token_id=self.eos, pad_token_id=self.pad)
        out = self.model.generate(input_ids=left, attention_mask=left_mask.long(), generation_config=settings)
        return out[:, left.size(1):]

    def generate_text(self, inputs: dict[str, Any], max_len: int) -> list[str]:
        """Greedy replies as text, placeholders filled from ``inputs["recommend"]`` when given."""
        texts = [self._text(row) for row in self.generate_ids(inputs, max_len).tolist()]
        recommend = inputs.get("recommend")
        if recommend is None or not self.placeholder or not self.item_ids:
            return texts
        wanted = min(max(text.count(self.placeholder) for text in texts), len(self.item_ids))
        if wanted < 1:
            return texts
        ranked = recommend(wanted).tolist()
        items = [[self.item_ids[i] for i in row] for row in ranked]
        return fill_placeholders(texts, self.placeholder, items)

    def _text(self, ids: list[int]) -> str:
        if self.eos in ids:
            ids = ids[:ids.index(self.eos)]
        kept = [i for i in ids if i not in self._hidden]
        return self.tokenizer.decode(kept, skip_special_tokens=False).strip()

    @torch.no_grad()
    def generate(self, inputs: dict[str, Any], max_len: int) -> torch.Tensor:
        """The replies of :meth:`generate_text` as word-vocabulary ids (B, T): no BOS, EOS last, pad after.

        Unfilled placeholders name no item and are dropped.  Words the vocabulary lacks
        become UNK, as they would in a reference.
        """
        if self.vocab is None:
            raise ConfigError(self.path, "generate() returns ids of the pipeline's word vocabulary, which this "
                              "generator was built without", "use generate_text(), or build it in a pipeline")
        rows = []
        for text in self.generate_text(inputs, max_len):
            if self.placeholder:
                text = text.replace(self.placeholder, " ")
            rows.append([*self.vocab.encode(text)[:max(0, max_len - 1)], self.vocab.eos])
        out = torch.full((len(rows), max(len(r) for r in rows)), self.vocab.pad, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out.to(inputs["context"].device)
