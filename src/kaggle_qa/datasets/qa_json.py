"""QA datasets in the paper's JSON format, validated on every load and save."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError
from kedro.io.core import Version

from kaggle_qa.qa_schema import validate_rows


class QAJSONDataset(AbstractVersionedDataset):
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
        super().__init__(PurePosixPath(Path(filepath).as_posix()), version)
        self._allow_empty = allow_empty
        self.metadata = metadata

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.rename(path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
