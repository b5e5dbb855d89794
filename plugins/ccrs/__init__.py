"""CCRS (Li et al. 2022, "Customized Conversational Recommender Systems"): user-guided relation
attention (Eq. 1-6), turn intention (Eq. 7-8) and the multi-style vocabulary bias (Eq. 9-10).

The ``maml`` training strategy and the ``user_adapt`` protocol that make the model
per-user are not here: they work on any pipeline, so they are registered by the built-in
training-strategy and metrics plugins.  This entry module only registers lazy "module:Class" references, so loading
the plugin imports no torch.
"""
from crs.hookspecs import hookimpl

_PKG = "crs.plugins.ccrs"


@hookimpl
def crs_register_external_encoders(register):
    register("user_relation_attention", f"{_PKG}.relation_attention:UserRelationAttention")  # Eq. 1-6


@hookimpl
def crs_register_user_encoders(register):
    register("turn_intention", f"{_PKG}.turn_intention:TurnIntentionEncoder")  # Eq. 7-8
    register("multi_style", f"{_PKG}.multi_style:MultiStyleBias")  # Eq. 9-10 (num_styles 0: KBRD's bias)
