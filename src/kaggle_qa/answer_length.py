"""How long an answer may be, from the data the model was trained on (not a fixed cut).

Training records the distribution of its training rows' answer lengths in tokens (answer + EOS,
the tokens that carry loss) in the adapter's ``training_params.json`` as ``answer_tokens``
(:func:`answer_token_stats`). Evaluation and the assistant read it back and let the model
generate up to :func:`max_new_tokens` = ``ceil(HEADROOM x p99)`` tokens, at most half of the
adapter's ``max_length`` (the other half stays for the prompt), unless a parameter
(``evaluate.max_new_tokens``, ``assistant.max_new_tokens``, ``--max-new-tokens``) overrides it.
"""

from __future__ import annotations

import math

import numpy as np

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
QUANTILE = "p99"  # the answer length nearly every training answer fits in
HEADROOM = 1.25  # room above it: a complete answer of a slightly longer kind is not cut


def answer_token_stats(lengths: list[int]) -> dict:
    """Count, mean, quantiles and maximum of answer lengths in tokens (answer + EOS)."""
    if not lengths:
        raise ValueError("no training answers to measure: answer_tokens needs at least one")
    values = np.asarray(lengths, dtype=float)
    stats = {"count": int(values.size), "mean": round(float(values.mean()), 2), "max": int(values.max())}
    stats.update({name: float(np.quantile(values, q)) for name, q in QUANTILES.items()})
    return stats


def max_new_tokens(training_params: dict, override: int | None, max_length: int, source: str) -> int:
    """`override` when set, else ``ceil(HEADROOM x p99)`` of the recorded ``answer_tokens``, capped at
    ``max_length // 2``. Raises naming `source` when neither is there (an adapter trained before
    training recorded answer lengths)."""
    if override is not None:
        if int(override) < 1 or int(override) >= max_length:
            raise ValueError(f"max_new_tokens {override} must be at least 1 and below max_length {max_length}")
        return int(override)
    stats = (training_params or {}).get("answer_tokens") or {}
    if QUANTILE not in stats:
        raise ValueError(
            f"{source}: training_params.json records no answer_tokens.{QUANTILE} (trained before answer lengths were "
            "recorded): retrain, or set max_new_tokens (evaluate.max_new_tokens / assistant.max_new_tokens / "
            "--max-new-tokens)"
        )
    return max(1, min(math.ceil(HEADROOM * stats[QUANTILE]), max_length // 2))


def describe(training_params: dict, override: int | None) -> str:
    """Where a max_new_tokens value came from, for logs and reports."""
    if override is not None:
        return "set by parameter"
    stats = training_params["answer_tokens"]
    return (f"ceil({HEADROOM} x {QUANTILE} {stats[QUANTILE]:g}) of {stats['count']} training answers' tokens "
            "(training_params.json)")
