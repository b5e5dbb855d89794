"""Using a trained pipeline without training it: ``crs eval``, ``crs chat``, ``crs serve``.

- :func:`load_pipeline` (``load.py``): rebuild a finished run's pipeline from its run
  directory (``config.yaml`` + the final model state of ``checkpoint.pt``);
- ``session.py``: one conversation with a pipeline (typed turn -> sample -> scores, reply, /why);
- ``chat.py``: ``crs chat`` (terminal); ``server.py`` + ``static/``: ``crs serve`` (FastAPI, optional
  extra ``serve``), imported only by those commands.
"""
from .load import load_pipeline

__all__ = ["load_pipeline"]
