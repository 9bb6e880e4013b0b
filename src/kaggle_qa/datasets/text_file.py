"""Base for versioned single-file datasets written atomically (temp file, then rename)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError
from kedro.io.core import Version


class VersionedTextFileDataset(AbstractVersionedDataset):
    """One text file, optionally versioned; subclasses implement ``load`` and ``save``."""

    def __init__(self, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(PurePosixPath(Path(filepath).as_posix()), version)
        self.metadata = metadata

    def _write_atomically(self, path: Path, text: str) -> None:
        """Write `text` to `path` so a crash never leaves half a file there."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
