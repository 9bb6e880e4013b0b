"""The evaluate pipeline (placeholder until its issue lands)."""

from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([])
