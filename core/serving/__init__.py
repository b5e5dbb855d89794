"""Using a trained pipeline without training it: ``crs eval`` today, ``crs chat``/``serve`` later.

- :func:`load_pipeline` (``load.py``): rebuild a finished run's pipeline from its run
  directory (``config.yaml`` + the final model state of ``checkpoint.pt``).
"""
from .load import load_pipeline

__all__ = ["load_pipeline"]
