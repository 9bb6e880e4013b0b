"""Offline `evaluate` metric modules, one folder each (``<name>/<name>.py``).

:func:`load_metric` is the only place the project calls ``evaluate.load``, always with
the absolute path of a folder in this package: a bare name such as ``"rouge"`` would
fetch a script from the Hub and fail on a fresh, offline machine.

Around the modules: :mod:`.scoring` (``score_answers``: every metric for a list of
answers), :mod:`.summary` (``summarize``: means per group with chunk-bootstrap intervals
and paired p-values), :mod:`.bootstrap` (the resampling) and :mod:`.empty` (the one rule
for empty strings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = (
    "answer_length",
    "first_word_accuracy",
    "groundedness",
    "qa_bertscore",
    "qa_bleu",
    "qa_rouge",
    "semantic_similarity",
)


def metric_path(name: str) -> Path:
    """Absolute folder of the metric module `name`; raises if it is not one of ours."""
    folder = METRICS_DIR / name
    if name not in METRIC_NAMES or not (folder / f"{name}.py").is_file():
        raise ValueError(f"unknown metric {name!r}; the project's metrics are {list(METRIC_NAMES)}")
    return folder


@lru_cache(maxsize=None)
def load_metric(name: str):
    """Load one of the project's metric modules offline (never a Hub name), once per process."""
    import evaluate

    return evaluate.load(str(metric_path(name)), keep_in_memory=True)
