"""Which ``doc_chunks`` version a synthesis run read: saved next to the QA versions it made.

``qa_provenance`` is versioned like ``qa_v1``–``qa_v3`` and saved in the same run, so
``data/03_primary/qa_provenance.json/<version>/`` belongs to ``qa_v3.json/<version>/``. It
names the doc_chunks version whose content hash equals what was loaded (``null`` when the
chunks did not come from a saved version, e.g. in a test), and each QA version's row count
and content hash.
"""

from __future__ import annotations

import logging

from kaggle_qa.datasets.ingestion import records_sha256

logger = logging.getLogger(__name__)


def record_provenance(
    doc_chunks: list[dict], doc_chunks_versions: dict[str, str], qa_v1: list[dict], qa_v2: list[dict],
    qa_v3: list[dict],
) -> dict:
    """The doc_chunks version (by content hash) and the QA sets made from it."""
    sha = records_sha256(doc_chunks)
    matches = sorted(version for version, digest in doc_chunks_versions.items() if digest == sha)
    version = matches[-1] if matches else None
    if version is None:
        logger.warning("doc_chunks (sha256 %s…) matches no saved doc_chunks version", sha[:12])
    else:
        logger.info("Synthesised from doc_chunks version %s (%d chunks)", version, len(doc_chunks))
    return {
        "doc_chunks": {"version": version, "identical_versions": matches, "sha256": sha, "chunks": len(doc_chunks)},
        "qa": {name: {"rows": len(rows), "sha256": records_sha256(rows)}
               for name, rows in (("qa_v1", qa_v1), ("qa_v2", qa_v2), ("qa_v3", qa_v3))},
    }
