"""Near-duplicate questions by ROUGE-L, as Self-Instruct filters its instruction pool.

Scoring every new question against every kept one is quadratic in pure Python, so an
inverted index first bounds ROUGE-L from the shared-token count (the LCS is never longer
than the multiset overlap) and only candidates whose bound passes get the exact LCS.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from rouge_score.rouge_scorer import _score_lcs
from rouge_score.tokenize import tokenize


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's own tokenisation (lower case, alphanumeric runs, no stemming)."""
    return tokenize(text, None)


class RougeIndex:
    """Kept texts, queried for the most similar one by ROUGE-L F-measure."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._texts: list[str] = []
        self._payloads: list[object] = []
        self._tokens: list[list[str]] = []
        self._counts: list[Counter] = []
        self._postings: dict[str, set[int]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, text: str, payload: object = None) -> None:
        """Keep `text` (with anything the caller wants back on a match)."""
        index = len(self._texts)
        tokens = rouge_tokens(text)
        self._texts.append(text)
        self._payloads.append(payload)
        self._tokens.append(tokens)
        self._counts.append(Counter(tokens))
        for token in set(tokens):
            self._postings[token].add(index)

    def matches(self, text: str) -> list[tuple[float, str, object]]:
        """(ROUGE-L F, kept text, payload) of every kept text above the threshold, best first."""
        tokens = rouge_tokens(text)
        overlap: Counter = Counter()
        for token, n in Counter(tokens).items():
            for index in self._postings.get(token, ()):
                overlap[index] += min(n, self._counts[index][token])
        found = []
        for index, shared in overlap.items():
            if 2 * shared / (len(tokens) + len(self._tokens[index])) <= self.threshold:
                continue  # even a perfect LCS could not pass
            score = _score_lcs(self._tokens[index], tokens).fmeasure
            if score > self.threshold:
                found.append((score, self._texts[index], self._payloads[index]))
        return sorted(found, key=lambda match: -match[0])

    def is_near_duplicate(self, text: str) -> tuple[bool, float, str | None]:
        """(duplicate?, best score, best kept text) against the threshold."""
        found = self.matches(text)
        return (True, found[0][0], found[0][1]) if found else (False, 0.0, None)
