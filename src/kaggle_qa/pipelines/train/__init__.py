"""The train pipeline and the Table 3 sweep."""

from .pipeline import create_pipeline, create_sweep_pipeline

__all__ = ["create_pipeline", "create_sweep_pipeline"]
