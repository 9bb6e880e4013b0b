"""JSON lines of records (evaluation predictions), optionally versioned."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError
from kedro.io.core import Version


class JSONLinesDataset(AbstractVersionedDataset):
    """A list of JSON objects stored one per line; a bad line fails naming file and line.

    Example::

        predictions:
          type: kaggle_qa.datasets.evaluate.JSONLinesDataset
          filepath: data/07_model_output/predictions.jsonl
          versioned: true
    """

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(Path(filepath).as_posix()), version)
        self.metadata = metadata

    def load(self) -> list[dict]:
        path = Path(self._get_load_path())
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {number} is not valid JSON ({exc})") from exc
        return records

    def save(self, data: list[dict]) -> None:
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in data), encoding="utf-8")
        tmp.rename(path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
