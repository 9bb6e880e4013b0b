"""QA datasets in the paper's JSON format, validated on every load and save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import DatasetError
from kedro.io.core import Version

from kaggle_qa.qa_schema import validate_rows

from .text_file import VersionedTextFileDataset


class QAJSONDataset(VersionedTextFileDataset):
    """A JSON list of ``{"input", "instruction", "output", ...}`` rows (the paper's format).

    Rows are validated on load and on save: a missing key or a non-string value raises
    an error naming the file and the row index. Extra keys (provenance) are kept.

    Example::

        qa_v3:
          type: kaggle_qa.datasets.QAJSONDataset
          filepath: data/03_primary/qa_v3.json
          versioned: true
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        allow_empty: bool = True,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(filepath, version, metadata)
        self._allow_empty = allow_empty

    def load(self) -> list[dict]:
        path = Path(self._get_load_path())
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
        rows = validate_rows(rows, str(path))
        if not rows and not self._allow_empty:
            raise DatasetError(f"{path}: the dataset is empty")
        return rows

    def save(self, data: list[dict]) -> None:
        path = Path(self._get_save_path())
        validate_rows(data, str(path))
        self._write_atomically(path, json.dumps(data, indent=1, ensure_ascii=False))
