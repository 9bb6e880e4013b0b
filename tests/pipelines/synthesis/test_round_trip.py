"""The retrieval round trip: an open question is kept only when search leads back to its chunk."""

from __future__ import annotations

import pytest

from kaggle_qa.pipelines.synthesis.nodes import filter_candidates, generate_candidates, split_chunks
from kaggle_qa.pipelines.synthesis.round_trip import round_trip_filter, source_ranks
from kaggle_qa.retrieval import Retriever, build_index


@pytest.fixture(scope="module")
def retriever():
    from .conftest import make_chunks

    chunks = make_chunks()
    chunks.append({**chunks[3], "chunk_id": "copy-of-chunk03", "url": "https://www.kaggle.com/docs/gpu-copy"})
    return Retriever(build_index(chunks))


def _open(question: str, chunk_id: str) -> dict:
    return {"instruction": question, "input": "", "output": "An answer.", "task_type": "extractive_qa",
            "chunk_id": chunk_id}


def test_a_specific_question_finds_its_chunk_and_a_vague_one_does_not(retriever):
    rows = [
        _open("How many hours per week can a GPU session run in Notebooks?", "chunk03"),
        _open("What should I know about the answer?", "chunk02"),  # leads nowhere in particular
        _open("How do I merge teams before the team merger deadline?", "chunk00"),  # chunk01's words
        {"instruction": "True or False: the private leaderboard decides the final standings.", "input": "",
         "output": "True.", "task_type": "true_false", "chunk_id": "chunk02"},
    ]
    ranks = source_ranks(rows[:3], retriever, "bm25")
    assert ranks[0] == 1 and ranks[2] > 1
    kept, dropped = round_trip_filter(rows, "v2", retriever, "bm25", max_rank=1)
    assert rows[0] in kept and rows[3] in kept  # labelled rows are statements from the chunk: not checked
    assert rows[2] not in kept
    dropped_rows = [record["row"] for record in dropped]
    assert rows[2] in dropped_rows and len(kept) + len(dropped) == len(rows)
    record = next(r for r in dropped if r["row"] is rows[2])
    assert record["reason"].startswith("retrieval round trip (source chunk at bm25 rank ")
    assert record["source_rank"] == ranks[2] and record["version"] == "v2"
    # a looser bound keeps what the strict one dropped; None switches the check off
    assert len(round_trip_filter(rows, "v2", retriever, "bm25", max_rank=len(retriever.chunks))[0]) == len(rows)
    assert round_trip_filter(rows, "v2", retriever, "bm25", max_rank=None) == (rows, [])


def test_the_same_passage_on_two_pages_does_not_push_its_source_down(retriever):
    question = "How many hours per week can a GPU session run in Notebooks?"
    pair = [_open(question, "chunk03"), _open(question, "copy-of-chunk03")]
    for method in ("dense", "bm25", "hybrid"):  # hybrid's fusion ranks the two copies 1 and 2: still a tie
        assert source_ranks(pair, retriever, method) == [1, 1], method


def test_a_row_whose_chunk_the_index_lacks_is_named(retriever):
    with pytest.raises(ValueError, match=r"round trip: row 0 .* chunk_id 'gone', which retrieval_index lacks"):
        source_ranks([_open("Where did it go?", "gone")], retriever, "hybrid")


def test_filter_candidates_counts_the_round_trip_in_its_report(chunks, params):
    """Through the node: every dropped open question is in the quarantine and the report's reasons;
    without the index (or with the bound off) the same candidates keep them."""
    split = split_chunks(chunks, params)
    candidates, _ = generate_candidates(chunks, split, {}, None, params)
    row = next(r for r in candidates["v2"] if r["task_type"] == "extractive_qa" and r["chunk_id"] != "chunk03")
    # a question about the GPU chunk's words, attributed to another chunk: search leads elsewhere
    candidates["v2"].append({**row, "instruction": "How many hours per week can a GPU session run in Notebooks?"})
    index = build_index(chunks)
    params["filters"]["round_trip_max_rank"] = 1
    v1, v2, v3, quarantine, report = filter_candidates(candidates, chunks, params, index, {"method": "bm25"})
    round_trip = [r for r in quarantine if r["reason"].startswith("retrieval round trip")]
    assert round_trip and all(r["source_rank"] > 1 for r in round_trip)
    assert sum(report[v]["dropped"].get("retrieval round trip", 0) for v in report) == len(round_trip)
    without = filter_candidates(candidates, chunks, params)
    assert sum(len(rows) for rows in without[:3]) > len(v1) + len(v2) + len(v3)
    params["filters"]["round_trip_max_rank"] = None
    assert filter_candidates(candidates, chunks, params, index, {"method": "bm25"})[:3] == without[:3]
