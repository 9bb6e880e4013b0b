"""Retrieval over doc chunks and the assistant that answers from them."""

import pytest

from kaggle_qa.assistant import Assistant
from kaggle_qa.retrieval import build_index, search

CHUNKS = [
    {"chunk_id": "a", "url": "https://www.kaggle.com/docs/competitions", "title": "Competitions",
     "heading_path": ["Competitions", "Submitting predictions"],
     "text": "To make a submission, upload a CSV file with your predictions on the competition's Submit page."},
    {"chunk_id": "b", "url": "https://www.kaggle.com/docs/notebooks", "title": "Notebooks",
     "heading_path": ["Notebooks", "Accelerators"],
     "text": "Notebooks can use a free GPU or TPU accelerator for a limited number of hours each week."},
    {"chunk_id": "c", "url": "https://www.kaggle.com/docs/organizations", "title": "Organizations",
     "heading_path": ["Organizations"],
     "text": "An organization profile stays pending until Kaggle approves it; non-members cannot view it."},
]


@pytest.fixture(scope="module")
def index():
    return build_index(CHUNKS)


@pytest.mark.parametrize(
    "question, expected",
    [
        ("How do I submit my predictions file?", "a"),
        ("Is there a weekly quota on GPUs?", "b"),
        ("Who can see a pending organization?", "c"),
    ],
)
def test_search_finds_the_chunk_that_answers(index, question, expected):
    hits = search(index, question, k=2)
    assert hits[0]["chunk_id"] == expected
    assert hits[0]["score"] > hits[1]["score"]


def test_index_refuses_empty_chunks():
    with pytest.raises(ValueError, match="doc_chunks is empty"):
        build_index([])


def test_assistant_answers_with_sources(tiny_gemma_path, index):
    assistant = Assistant(tiny_gemma_path, None, index, top_k=2, max_new_tokens=5)
    reply = assistant.ask("Who can see a pending organization?")
    assert reply.sources[0]["chunk_id"] == "c" and len(reply.sources) == 2
    assert isinstance(reply.answer, str)
    assert len(assistant.tokenizer(reply.answer, add_special_tokens=False)["input_ids"]) <= 6
