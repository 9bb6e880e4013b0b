"""JSON lines of records (evaluation predictions), optionally versioned."""

from __future__ import annotations

import json
from pathlib import Path

from kedro.io import DatasetError

from .text_file import VersionedTextFileDataset


class JSONLinesDataset(VersionedTextFileDataset):
    """A list of JSON objects stored one per line; a bad line fails naming file and line.

    Example::

        predictions:
          type: kaggle_qa.datasets.evaluate.JSONLinesDataset
          filepath: data/07_model_output/predictions.jsonl
          versioned: true
    """

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
        self._write_atomically(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in data))
