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
        self._tokens: list[list[str]] = []
        self._counts: list[Counter] = []
        self._postings: dict[str, set[int]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._texts)

    def add(self, text: str) -> None:
        index = len(self._texts)
        tokens = rouge_tokens(text)
        self._texts.append(text)
        self._tokens.append(tokens)
        self._counts.append(Counter(tokens))
        for token in set(tokens):
            self._postings[token].add(index)

    def most_similar(self, text: str) -> tuple[float, str | None]:
        """Best ROUGE-L F against the kept texts among those that could pass the threshold."""
        tokens = rouge_tokens(text)
        overlap: Counter = Counter()
        for token, n in Counter(tokens).items():
            for index in self._postings.get(token, ()):
                overlap[index] += min(n, self._counts[index][token])
        best, best_text = 0.0, None
        for index, shared in overlap.items():
            bound = 2 * shared / (len(tokens) + len(self._tokens[index]))
            if bound <= max(best, self.threshold):
                continue
            score = _score_lcs(self._tokens[index], tokens).fmeasure
            if score > best:
                best, best_text = score, self._texts[index]
        return best, best_text

    def is_near_duplicate(self, text: str) -> tuple[bool, float, str | None]:
        score, match = self.most_similar(text)
        return score > self.threshold, score, match
