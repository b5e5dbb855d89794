"""Built-in training strategies.

Entry module of the ``crs.plugins.training`` plugin: registers by lazy
``"module:Class"`` reference only, so loading the plugin imports no torch.
"""
from crs.hookspecs import hookimpl


@hookimpl
def crs_register_training_strategies(register):
    """Register ``plain`` (one optimizer step per batch over the stage's shuffled samples) and ``maml``
    (meta-learning over per-user support/query tasks, first or second order)."""
    register("plain", "crs.plugins.training.plain:PlainStrategy")
    register("maml", "crs.plugins.training.maml:MAMLStrategy")
