"""Round-trip consistency: an open question is kept only if search leads back to its source.

A generated question that the assistant's own retriever cannot connect to the chunk it was
written from ("Could you explain the code to me?", "What is click?") names nothing a reader
could look up: it teaches the model to answer vague questions with whatever passage it is
given, and as a test question it drags the in-domain relevance distribution down, so the
refusal threshold calibrated on it lets neighbouring tools' questions through. The check is the
round-trip filter of synthetic QA (Alberti et al. 2019; Promptagator's filter, Dai et al. 2022):
rank every chunk for the question with the configured ``retrieval.method`` and keep the row when
its source chunk ranks within ``synthesis.filters.round_trip_max_rank``. Chunks scoring as high
(ties) and copies of the source's text (the same passage on two pages) do not push it down.

Labelled rows (true/false, yes/no, NLI) are statements taken from the chunk and are not checked.
A test set filtered this way finds its gold chunk more easily than unfiltered questions would:
the retrieval table says so, and the user's own questions (``user_questions``) are the unbiased
check.
"""

from __future__ import annotations

import logging

import numpy as np

from kaggle_qa.qa_schema import OPEN_TASKS, infer_task_type
from kaggle_qa.retrieval import Retriever, document_text

from .filters import quarantined

logger = logging.getLogger(__name__)

REASON = "retrieval round trip"
TIE = 1e-6  # scores this close are a tie: one text's embedding moves in its last bits with its batch


def source_ranks(rows: list[dict], retriever: Retriever, method: str) -> list[int]:
    """1-based rank of each row's source chunk among all chunks for its question (ties count in
    its favour); a row whose chunk_id the index lacks fails naming the row."""
    position = {chunk["chunk_id"]: i for i, chunk in enumerate(retriever.chunks)}
    for i, row in enumerate(rows):
        if row.get("chunk_id") not in position:
            raise ValueError(
                f"round trip: row {i} ({row.get('instruction', '')[:60]!r}) has chunk_id {row.get('chunk_id')!r},"
                " which retrieval_index lacks: build the index and the QA data from the same doc_chunks"
            )
    if not rows:
        return []
    texts = np.array([document_text(chunk) for chunk in retriever.chunks], dtype=object)
    ranks = []
    for row, s in zip(rows, retriever.scores([row["instruction"] for row in rows])):
        source = position[row["chunk_id"]]
        # a copy of the source passage (the same text on another page) is not a better answer
        ahead = (s[method] > s[method][source] + TIE) & (texts != texts[source])
        ranks.append(int(np.sum(ahead)) + 1)
    return ranks


def round_trip_filter(rows: list[dict], version: str, retriever: Retriever | None, method: str | None,
                      max_rank: int | None) -> tuple[list[dict], list[dict]]:
    """(kept, dropped) rows: open questions whose source chunk ranks below `max_rank` are dropped
    (each as a quarantine record with its rank); `max_rank` None or no retriever keeps every row."""
    if max_rank is None or retriever is None:
        return rows, []
    open_rows = [i for i, row in enumerate(rows) if infer_task_type(row) in OPEN_TASKS]
    ranks = dict(zip(open_rows, source_ranks([rows[i] for i in open_rows], retriever, method)))
    kept = [row for i, row in enumerate(rows) if ranks.get(i, 1) <= max_rank]
    dropped = [quarantined(row, version, f"{REASON} (source chunk at {method} rank {ranks[i]} > {max_rank})",
                           source_rank=ranks[i])
               for i, row in enumerate(rows) if ranks.get(i, 1) > max_rank]
    logger.info("%s: %d of %d open questions lead back to their chunk within %s rank %d; %d dropped",
                version, len(open_rows) - len(dropped), len(open_rows), method, max_rank, len(dropped))
    return kept, dropped
