"""C2-CRS (Zhou et al., WSDM 2022, "C2-CRS: Coarse-to-Fine Contrastive Learning for Conversational
Recommender System"): a shared token embedding, the Transformer context encoder with mention
states, the review encoder, the coarse and fine contrastive objectives, and the decoder with
review fusion and instance-weighted generation loss.  Spec: ../shared/specs/c2crs.md.

The reusable pieces (NT-Xent, masked InfoNCE, projection heads) live in ``crs.nn.contrastive``
so other plugins can use them without importing this one.  This entry module only registers
lazy "module:Class" references, so loading the plugin imports no torch.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.c2crs"


@hookimpl
def crs_register_generators(register):
    # --- c2crs_decoder (engineer B): register("c2crs_decoder", f"{_PKG}.decoder:...") goes here ---
    pass
