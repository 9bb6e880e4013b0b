"""The evaluate pipeline."""

from .pipeline import create_assistant_evaluation_pipeline, create_pipeline

__all__ = ["create_assistant_evaluation_pipeline", "create_pipeline"]
