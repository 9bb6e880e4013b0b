"""Datasets of the train pipeline: the Table 3 sweep table as markdown + CSV."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError


class SweepTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A table saved twice: ``<filepath>.csv`` (machine-readable) and ``<filepath>.md`` (for reading).

    ``load`` reads the CSV back. Example::

        sweep_table:
          type: kaggle_qa.datasets.train.SweepTableDataset
          filepath: data/08_reporting/sweep_table
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(Path(filepath).as_posix())
        self.metadata = metadata

    def _paths(self) -> tuple[Path, Path]:
        base = Path(str(self._filepath))
        return base.with_suffix(".csv"), base.with_suffix(".md")

    def load(self) -> pd.DataFrame:
        csv_path, _ = self._paths()
        if not csv_path.exists():
            raise DatasetError(f"{csv_path} does not exist: run `kedro run --pipeline sweep` first")
        return pd.read_csv(csv_path)

    def save(self, data: pd.DataFrame) -> None:
        csv_path, md_path = self._paths()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        data.to_csv(csv_path, index=False)
        md_path.write_text(_markdown_table(data), encoding="utf-8")

    def _exists(self) -> bool:
        return self._paths()[0].exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (no `tabulate` dependency)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"
