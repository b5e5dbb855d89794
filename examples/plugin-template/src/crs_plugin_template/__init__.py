"""crs plugin `template`: registers the `mean_entity` recommender.

This module is what the ``crs`` entry point loads, for every crs command, so it
stays light: it names the component class by a lazy ``"module:Class"`` string and
imports no torch.  The class is imported the first time a config uses it.
"""
from crs.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def crs_register_recommenders(register):
    """Register this package's recommenders."""
    register("mean_entity", "crs_plugin_template.mean_entity:MeanEntityRecommender")
