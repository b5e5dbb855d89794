"""Run configs: the PipelineSpec schema, YAML loading/layering, and dataclass validation.

``load_config`` and ``validate_components`` (crs.config.loader) import OmegaConf, so
they are loaded on first use; ``from_dict`` (crs.config.validate) is always light.
"""
from __future__ import annotations

from typing import Any

from .validate import from_dict

__all__ = ["from_dict", "load_config", "validate_components", "find_registry_file"]


def __getattr__(name: str) -> Any:
    if name in ("load_config", "validate_components", "find_registry_file"):
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'crs.config' has no attribute '{name}'")
