"""crs-registry: conversational recommender systems composed from registered plugin components."""

__version__ = "0.1.0"
