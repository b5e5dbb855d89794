"""C2-CRS (Zhou et al., WSDM 2022, "C2-CRS: Coarse-to-Fine Contrastive Learning for Conversational
Recommender System"): a shared token embedding, the Transformer context encoder with mention
states, the review encoder, the coarse and fine contrastive objectives, and the decoder with
review fusion and instance-weighted generation loss.  Spec: ../shared/specs/c2crs.md.

The shared token embedding is core's ``token_embedding`` shared module: a pipeline declares
``shared: {tokens: {type: token_embedding, dim: 300}}`` and each slot names it with
``embedding: tokens`` (one parameter, owned once by the pipeline, trained with
``train: [shared.tokens, ...]``).

The reusable pieces (NT-Xent, masked InfoNCE, projection heads) live in ``crs.nn.contrastive``
so other plugins can use them without importing this one.  This entry module only registers
lazy "module:Class" references, so loading the plugin imports no torch.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.c2crs"


@hookimpl
def crs_register_context_encoders(register):
    register("c2crs_context", f"{_PKG}.context:C2CRSContextEncoder")  # Eq. 1-2, mention states


@hookimpl
def crs_register_external_encoders(register):
    register("c2crs_review", f"{_PKG}.review:C2CRSReviewEncoder")  # user-generated data (reviews / plots)


@hookimpl
def crs_register_fusion_objectives(register):
    register("c2crs_coarse", f"{_PKG}.objectives:CoarseContrastiveObjective")  # Eq. 4-5, user level
    register("c2crs_fine", f"{_PKG}.objectives:FineContrastiveObjective")  # Eq. 5-6, entity level (masked InfoNCE)


@hookimpl
def crs_register_generators(register):
    register("c2crs_decoder", f"{_PKG}.decoder:C2CRSDecoder")  # context/entity/review attention, Eq. 10-12
