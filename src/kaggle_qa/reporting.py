"""Markdown helpers shared by every pipeline's report: one table writer, one cell cleaner.

Reports (ingestion report, datasheet, evaluation report) are plain markdown that GitHub
and kedro-viz render; they all build their tables here so that escaping and alignment
are done one way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any, limit: int | None = None) -> str:
    """One table cell: whitespace collapsed, `|` escaped, cut to `limit` characters with "…"."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def format_number(value: Any, digits: int = 3) -> str:
    """Numbers for tables: "–" for missing, ints as is, small floats to `digits` decimals, large to one."""
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(
    header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str | None = None, limit: int | None = None
) -> str:
    """A markdown table; `align` is one letter per column (`l`, `r`, `c`), default left.

    Every cell goes through :func:`cell`, so a `|` or a newline inside a value cannot break the table.
    """
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns")
    rules = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(cell(name) for name in header) + " |", "|" + "|".join(rules[a] for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cell(value, limit) for value in row) + " |")
    return "\n".join(lines)
