"""Built-in plugin: pretrained Hugging Face language models as pipeline components.

- featurizer ``plm_tokens``: sub-word token ids of each sample's context and reply,
  computed once during data preparation (batch fields ``<prefix>_context_ids`` and
  ``<prefix>_response_ids``);
- generator ``hf_causal_lm``: a causal LM fine-tuned on those fields, writing reply
  text with item placeholders filled from the pipeline's recommender.

Models and tokenizers come from any source :mod:`crs.plm` resolves (a local folder,
``package:<pip package>[/subdir]``, a cached hub id).  Registration only (lazy
"module:Class" references): transformers loads when a component is built.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.plm"


@hookimpl
def crs_register_featurizers(register):
    register("plm_tokens", f"{_PKG}.featurizer:PLMTokens")


@hookimpl
def crs_register_generators(register):
    register("hf_causal_lm", f"{_PKG}.causal_lm:HFCausalLM")
