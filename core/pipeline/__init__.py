"""Turning a validated spec into a runnable pipeline (see builder.build_pipeline)."""
from .builder import Pipeline, build_pipeline
from .model import PipelineModel

__all__ = ["Pipeline", "PipelineModel", "build_pipeline"]
