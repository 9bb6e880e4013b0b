"""Catalog datasets of the ingestion pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import VersionNotFoundError
from kedro_datasets.json import JSONDataset


class LatestVersionJSONDataset(JSONDataset):
    """Read-only view of the latest saved version of a versioned JSON dataset; ``[]`` before the first.

    Lets a node compare what it is about to save with what the previous run saved, e.g.::

        raw_pages_previous:
          type: kaggle_qa.datasets.ingestion.LatestVersionJSONDataset
          filepath: data/01_raw/raw_pages.json   # the same path as raw_pages
          versioned: true
    """

    def load(self) -> Any:
        try:
            self.resolve_load_version()
        except VersionNotFoundError:
            return []
        return super().load()

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self} is read-only: save to the dataset it mirrors instead")


def records_sha256(records: Any) -> str:
    """sha256 of JSON content in a canonical form (sorted keys, no whitespace): same data, same hash."""
    canonical = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class VersionIndexDataset(AbstractDataset):
    """Read-only: every saved version of a versioned JSON dataset, as ``{version: content sha256}``.

    Lets a node say which version of an input it was given (the one whose content hash
    matches), even when that input was pinned with ``--load-versions`` or is the latest::

        doc_chunks_versions:
          type: kaggle_qa.datasets.ingestion.VersionIndexDataset
          filepath: data/02_intermediate/doc_chunks.json   # the same path as doc_chunks
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        if not self._filepath.is_dir():
            return {}
        index = {}
        for version in sorted(self._filepath.iterdir()):
            path = version / self._filepath.name
            if path.is_file():
                try:
                    index[version.name] = records_sha256(json.loads(path.read_text(encoding="utf-8")))
                except json.JSONDecodeError as error:
                    raise DatasetError(f"{path} is not valid JSON ({error})") from error
        return index

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self} is read-only: it lists the versions of {self._filepath}")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
