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


class ResultsByKeyDataset(VersionedTextFileDataset):
    """Read-only index of every saved version of a versioned JSON dataset whose records carry a ``key``.

    ``load()`` returns ``{key: record}`` (the newest version wins for a key; ``{}`` before the
    first save), each record with ``saved_version`` added. The evaluate pipeline reads its own
    ``base_answers`` this way to reuse the base model's results when only the adapter changed::

        base_answers_cache:
          type: kaggle_qa.datasets.evaluate.ResultsByKeyDataset
          filepath: data/07_model_output/base_answers.json   # the same path as base_answers
    """

    def __init__(self, filepath: str, metadata: dict | None = None):
        super().__init__(filepath=filepath, version=None, metadata=metadata)

    def load(self) -> dict[str, dict]:
        root = Path(self._filepath)
        found: dict[str, dict] = {}
        versions = sorted(p.name for p in root.iterdir() if (p / root.name).is_file()) if root.is_dir() else []
        for version in versions:  # oldest first: a newer version of the same key replaces an older one
            path = root / version / root.name
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path} is not valid JSON ({exc}); delete that version to go on") from exc
            if isinstance(record, dict) and record.get("key"):
                found[record["key"]] = {**record, "saved_version": version}
        return found

    def save(self, data) -> None:
        raise DatasetError(f"{self._filepath} (cache view) is read-only: save to the dataset it indexes instead")

    def _exists(self) -> bool:
        return True
