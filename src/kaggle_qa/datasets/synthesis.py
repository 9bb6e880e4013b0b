"""Datasets of the synthesis pipeline: the teacher's API key, and read-only published QA data."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError

from .qa_json import QAJSONDataset


class Secret(str):
    """A string that never shows itself in logs, reprs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


class APIKeyDataset(AbstractDataset):
    """The teacher's API key, from Kedro credentials (conf/local/credentials.yml or the
    environment via ``${oc.env:OPENAI_API_KEY,null}``); loads a :class:`Secret` or None.

    Example::

        teacher_api_key:
          type: kaggle_qa.datasets.synthesis.APIKeyDataset
          credentials: openai
    """

    def __init__(self, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        key = (credentials or {}).get("api_key")
        self._key = Secret(key) if key else None
        self.metadata = metadata

    def load(self) -> Secret | None:
        return self._key

    def save(self, data: Any) -> None:
        raise DatasetError("APIKeyDataset is read-only: keys come from credentials, never from a pipeline")

    def _describe(self) -> dict[str, Any]:
        return {"api_key": "set" if self._key else "missing"}


class PublishedQADataset(QAJSONDataset):
    """A vendored, validated QA dataset (the paper's published v1/v3) that nothing may overwrite."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        super().__init__(filepath=filepath, version=None, allow_empty=False, metadata=metadata)

    def save(self, data: list[dict]) -> None:
        raise DatasetError(
            f"{self._filepath} is a vendored published dataset and read-only. With `--env published`, "
            "run only the pipelines that read it (e.g. `kedro run --env published --pipeline train`), "
            "not synthesis, which would overwrite it."
        )
