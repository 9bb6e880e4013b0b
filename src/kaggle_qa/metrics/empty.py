"""One rule for empty strings in every similarity metric (a model answering only `<eos>` gives "").

An answer or reference is *empty* when it holds only whitespace. Similarity metrics
(ROUGE, sentence BLEU, semantic similarity, BERTScore) score such a pair without calling
their scorer (bert_score crashes on "", an encoder embeds "" as an arbitrary vector):
both empty → the metric's maximum (identical texts), one empty → 0. Each module also
returns how many predictions and references were empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def is_empty(text: str) -> bool:
    return not (text or "").strip()


def empty_counts(predictions: Sequence[str], references: Sequence[str]) -> dict[str, int]:
    return {
        "empty_predictions": sum(map(is_empty, predictions)),
        "empty_references": sum(map(is_empty, references)),
    }


def score_pairs(
    predictions: Sequence[str],
    references: Sequence[str],
    scorer: Callable[[list[str], list[str]], list[float]],
    maximum: float = 1.0,
) -> list[float]:
    """Per-pair scores: `scorer` on the pairs where both texts are non-empty, the empty rule elsewhere."""
    scores = [maximum if is_empty(p) and is_empty(r) else 0.0 for p, r in zip(predictions, references)]
    kept = [i for i, (p, r) in enumerate(zip(predictions, references)) if not is_empty(p) and not is_empty(r)]
    if kept:
        for i, value in zip(kept, scorer([predictions[i] for i in kept], [references[i] for i in kept])):
            scores[i] = float(value)
    return scores
