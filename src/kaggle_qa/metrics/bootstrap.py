"""Cluster bootstrap: 95 % intervals and paired p-values that resample chunks, not rows.

Rows made from one documentation chunk share a context and are not independent (a model
that misreads the chunk misses all of them), so resampling rows would give intervals that
are too narrow. Every statistic here is computed from per-chunk sums: a bootstrap replicate
draws as many chunks as there are, with replacement, and weights each chunk by how often
it was drawn (Davison & Hinkley 1997, sec. 3.8).

A statistic is either a ratio of sums (a mean, an accuracy over a subset, a token-weighted
loss: :class:`Ratio`) or any function of summed per-item vectors (corpus BLEU from
sacrebleu's sufficient statistics: :class:`Pooled`). The paired test uses the same draws
for base and fine-tuned, so chunk difficulty cancels out; its two-sided p-value is twice
the smaller share of replicates on either side of zero (the smallest level at which the
percentile interval of the change excludes 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ratio:
    """sum(numerator) / sum(denominator) over items; an item with denominator 0 does not count."""

    numerator: Sequence[float]
    denominator: Sequence[float]


@dataclass(frozen=True)
class Pooled:
    """`score(summed vectors)` where each item contributes one vector (e.g. BLEU n-gram counts)."""

    vectors: Sequence[Sequence[float]]
    score: Callable[[np.ndarray], float]


Statistic = Ratio | Pooled


class ChunkBootstrap:
    """Replicate weights over the chunks of one test set, drawn once and shared by every statistic."""

    def __init__(self, chunk_of_item: Sequence[str], resamples: int = 1000, seed: int = 0, confidence: float = 0.95):
        if resamples < 1:
            raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
        if not 0 < confidence < 1:
            raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")
        self.chunks = sorted(set(chunk_of_item))
        index = {chunk: k for k, chunk in enumerate(self.chunks)}
        self.item_chunk = np.array([index[chunk] for chunk in chunk_of_item], dtype=int)
        self.confidence = confidence
        n = len(self.chunks)
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float) if n else np.zeros((resamples, 0))

    def _per_chunk(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        sums = np.zeros((len(self.chunks), *values.shape[1:]))
        np.add.at(sums, self.item_chunk, values)
        return sums

    def point(self, statistic: Statistic) -> float | None:
        """The statistic on the whole test set (None when undefined, e.g. no item in the subset)."""
        return self._evaluate(statistic, np.ones((1, len(self.chunks))))[0]

    def replicates(self, statistic: Statistic) -> np.ndarray:
        """The statistic on every bootstrap replicate (NaN where undefined)."""
        values = self._evaluate(statistic, self.weights)
        return np.array([np.nan if value is None else value for value in values], dtype=float)

    def _evaluate(self, statistic: Statistic, weights: np.ndarray) -> list[float | None]:
        if isinstance(statistic, Ratio):
            numerator = weights @ self._per_chunk(statistic.numerator)
            denominator = weights @ self._per_chunk(statistic.denominator)
            return [None if d == 0 else float(n / d) for n, d in zip(numerator, denominator)]
        summed = np.einsum("bc,ck->bk", weights, self._per_chunk(statistic.vectors))
        return [float(statistic.score(row)) for row in summed]

    def interval(self, statistic: Statistic) -> list[float] | None:
        """Percentile interval at `confidence` (None when the statistic is undefined)."""
        values = self.replicates(statistic)
        values = values[~np.isnan(values)]
        if not len(values):
            return None
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return [float(low), float(high)]

    def paired(self, before: Statistic, after: Statistic) -> dict | None:
        """Change after − before with its interval and two-sided paired bootstrap p-value."""
        point_before, point_after = self.point(before), self.point(after)
        if point_before is None or point_after is None:
            return None
        deltas = self.replicates(after) - self.replicates(before)
        deltas = deltas[~np.isnan(deltas)]
        tail = (1 - self.confidence) / 2 * 100
        below, above = int((deltas <= 0).sum()), int((deltas >= 0).sum())
        p_value = min(1.0, 2 * min(below + 1, above + 1) / (len(deltas) + 1))
        low, high = np.percentile(deltas, [tail, 100 - tail])
        return {"delta": point_after - point_before, "ci": [float(low), float(high)], "p_value": p_value}
