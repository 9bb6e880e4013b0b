"""Retrieval over doc chunks (dense, BM25, hybrid; the index's own encoder) and the assistant core."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from kaggle_qa.assistant import NOT_COVERED, Assistant
from kaggle_qa.modeling import load_model, load_tokenizer
from kaggle_qa.retrieval import (
    DEFAULT_ENCODER, Retrieval, Retriever, build_index, embed, refusal_reason, rrf_scores, search,
)

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


@pytest.fixture(scope="module")
def retrieval_params(project_root):
    """The project's own `retrieval` parameters (one source of truth for the threshold)."""
    return yaml.safe_load((project_root / "conf/base/parameters_ingestion.yml").read_text())["retrieval"]


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize(
    "question, expected",
    [
        ("How do I submit my predictions file?", "a"),
        ("Is there a weekly quota on GPU accelerator hours?", "b"),
        ("Who can see a pending organization?", "c"),
    ],
)
def test_every_method_finds_the_chunk_that_answers(index, method, question, expected):
    hits = search(index, question, k=2, method=method)
    assert hits[0]["chunk_id"] == expected
    assert hits[0]["score"] > hits[1]["score"]


def test_bm25_ranks_by_shared_words_and_hybrid_fuses_ranks(index):
    retrieval = Retriever(index).retrieve("organization profile pending approval", k=3, method="bm25")
    assert retrieval.hits[0]["chunk_id"] == "c" and retrieval.hits[0]["bm25_score"] > 0
    assert retrieval.hits[-1]["bm25_score"] == 0  # shares no (stemmed, non-stop) word
    fused = rrf_scores([np.array([0, 1, 2]), np.array([2, 1, 0])], rrf_k=60)
    assert fused[1] == pytest.approx(2 / 62) and fused[0] == pytest.approx(1 / 61 + 1 / 63)


@pytest.mark.parametrize("question, unknown", [
    ("How do I declare an option with Typer type hints?", ["typer"]),      # a neighbouring tool's name
    ("How do I install it with pipx and uv?", ["pipx"]),                    # "uv" is an English word (MiniLM's vocabulary)
    ("How do I submit my predictions file?", []),                          # the docs' own words
    ("How do I submitt my predicitons file?", []),                         # typos of docs words (6+ letters, one slip)
    ("How many GPU hours does a notebook get weekly?", []),               # "weekly": a common English word
])
def test_unknown_terms_are_words_neither_the_docs_nor_english_know(index, question, unknown):
    assert Retriever(index).unknown_terms(question) == unknown


def test_refusal_reason_applies_terms_then_relevance():
    known, named = Retrieval([], 0.8, []), Retrieval([], 0.8, ["typer"])
    assert refusal_reason(known, 0.35, 0) is None
    assert refusal_reason(named, 0.35, 0) == "unknown terms: typer"
    assert refusal_reason(named, 0.35, 1) is None and refusal_reason(named, 0.35, None) is None
    assert refusal_reason(Retrieval([], 0.2, []), 0.35, 0).startswith("relevance 0.200 < 0.350")


def test_index_records_the_default_encoder(index):
    assert index["encoder"] == DEFAULT_ENCODER and index["embedding_dim"] == 384


def test_queries_use_the_encoder_recorded_in_the_index(tmp_path):
    """An index built by another encoder (here 16-dimensional) is searched with that encoder."""
    from sentence_transformers import SentenceTransformer, models

    from kaggle_qa.retrieval import default_encoder_path

    base = SentenceTransformer(default_encoder_path(), device="cpu")
    projection = models.Dense(in_features=384, out_features=16, bias=False,
                              activation_function=__import__("torch").nn.Identity())
    SentenceTransformer(modules=[*base, projection], device="cpu").save(str(tmp_path / "encoder16"))
    other = str(tmp_path / "encoder16")

    index = build_index(CHUNKS, encoder_path=other)
    assert index["encoder"] == other and index["embeddings"].shape == (3, 16)
    retriever = Retriever(index)
    question = "Who can see a pending organization?"
    assert np.allclose(retriever.embed_questions([question]), embed([question], other))
    scores = retriever.scores([question])[0]["dense"]
    assert np.allclose(scores, index["embeddings"] @ embed([question], other)[0], atol=1e-6)
    # the default encoder's 384-d queries could not even be compared with this index
    with pytest.raises(ValueError, match="not the one that built retrieval_index"):
        Retriever({**index, "encoder": DEFAULT_ENCODER}).retrieve(question)


def test_index_refuses_empty_chunks_and_unknown_methods(index):
    with pytest.raises(ValueError, match="doc_chunks is empty"):
        build_index([])
    with pytest.raises(ValueError, match="unknown retrieval method 'tfidf'"):
        search(index, "anything", method="tfidf")
    with pytest.raises(ValueError, match="does not record its encoder"):
        Retriever({key: value for key, value in index.items() if key != "encoder"})


@pytest.fixture(scope="module")
def tiny_assistant(tiny_gemma_path, index, retrieval_params):
    return Assistant(
        load_model(tiny_gemma_path, dtype="float32"), load_tokenizer(tiny_gemma_path), Retriever(index),
        method="hybrid", top_k=2, relevance_threshold=0.35, max_new_tokens=5,  # the site calibrates its own (retrieval_eval)
    )


def test_assistant_answers_with_citations(tiny_assistant):
    reply = tiny_assistant.ask("Who can see a pending organization?")
    assert reply.covered and reply.relevance >= tiny_assistant.relevance_threshold
    assert reply.citations[0]["chunk_ids"] == ["c"] and len(reply.citations) == 2
    assert reply.citations[0]["url"] == "https://www.kaggle.com/docs/organizations"
    assert reply.citations[0]["heading_path"] == ["Organizations"]
    assert 1 <= reply.completion_tokens <= 5 and reply.prompt_tokens > 20
    assert "Sources:\n[1] https://www.kaggle.com/docs/organizations › Organizations" in reply.text_with_sources()
    json.dumps(reply.as_dict())  # --json output is serializable


def test_off_topic_question_is_not_covered(tiny_assistant, project_root):
    reply = tiny_assistant.ask("What is the capital of France?")
    assert not reply.covered and reply.answer == NOT_COVERED and reply.citations == []
    assert reply.completion_tokens == 0  # the model was not asked to guess
    from kaggle_qa.pipelines.evaluate.retrieval_eval import off_topic_rows

    off_topic = [row["question"] for row in
                 off_topic_rows(json.loads((project_root / "data/01_raw/off_topic_questions.json").read_text()))]
    refused = sum(not tiny_assistant.ask(q).covered for q in off_topic)
    assert refused / len(off_topic) >= 0.9


def test_streamed_pieces_make_the_answer_and_cancel_stops_it(tiny_assistant):
    import threading

    pieces: list[str] = []
    reply = tiny_assistant.ask("How do I submit my predictions file?", max_new_tokens=20, on_text=pieces.append)
    assert "".join(pieces).strip() == reply.answer
    cancel = threading.Event()
    cancel.set()
    stopped = tiny_assistant.ask("How do I submit my predictions file?", max_new_tokens=20, cancel=cancel)
    assert stopped.completion_tokens <= 1


def test_chunks_of_one_section_are_cited_once():
    from kaggle_qa.assistant.core import citations

    hits = [{**CHUNKS[2], "score": 0.9}, {**CHUNKS[0], "score": 0.5}, {**CHUNKS[2], "chunk_id": "c2", "score": 0.4}]
    cited = citations(hits)
    assert [c["chunk_ids"] for c in cited] == [["c", "c2"], ["a"]]
    assert cited[0]["score"] == 0.9 and cited[0]["heading_path"] == ["Organizations"]


def test_long_prompts_keep_the_best_chunks_opening(tiny_assistant):
    hits = [{"text": "Best chunk opens here. " + "word " * 300}, {"text": "Second chunk. " + "other " * 300}]
    ids = tiny_assistant.prompt_ids("Why?", hits, max_new_tokens=5)
    assert len(ids) <= tiny_assistant.max_length - 5
    text = tiny_assistant.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("Context:\nBest chunk opens here.") and text.count("word") == 300, "the best chunk is whole"
    assert "Second chunk." in text and 0 < text.count("other") < 300, "the second is cut at its end"


def test_long_prompts_are_cut_from_the_left_to_fit(tiny_assistant):
    hits = [{"text": "word " * 2000}]
    ids = tiny_assistant.prompt_ids("Why?", hits, max_new_tokens=5)
    assert len(ids) == tiny_assistant.max_length - 5
    assert ids[0] == tiny_assistant.tokenizer.bos_token_id
    assert tiny_assistant.tokenizer.decode(ids[-8:]).endswith("Why?\n\nAnswer:\n")


@pytest.mark.slow
def test_real_gemma_answers_from_the_retrieved_chunk(embedded_gemma_path, index, retrieval_params):
    assistant = Assistant.load(embedded_gemma_path, None, index, retrieval_params | {"top_k": 1},
                               {"dtype": "auto", "max_new_tokens": 24},
                               retrieval_metrics={"relevance": {"chosen": {"threshold": 0.35}}})
    reply = assistant.ask("Who can view an organization profile while it is pending?")
    assert reply.covered and reply.citations[0]["chunk_ids"] == ["c"]
    assert reply.answer and reply.completion_tokens >= 2


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_the_assistant_answers_in_evaluates_numerics(tiny_gemma_path, index, compute):
    """The assistant computes as evaluate does (kaggle_qa.numerics): float32 weights, matmuls in the compute
    dtype, linears prepacked while it lives: its answer is the plain model's under the same autocast, and
    close() gives the model its own layers back."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from kaggle_qa.decoding import lead_in_logits_processor, repeat_stopping_criterion

    model = load_model(tiny_gemma_path, dtype="float32")
    assistant = Assistant(model, load_tokenizer(tiny_gemma_path), Retriever(index), method="bm25", top_k=1,
                          relevance_threshold=0.0, max_new_tokens=6, compute_dtype=compute)
    packed = [m for m in model.modules() if "forward" in vars(m)]
    assert len(packed) == (sum(type(m) is torch.nn.Linear for m in model.modules())
                           if torch.backends.mkldnn.is_available() else 0)
    reply = assistant.ask("Who can see a pending organization?")
    prompt = assistant.prompt_ids("Who can see a pending organization?",
                                  assistant.retriever.retrieve("Who can see a pending organization?", 1, "bm25").hits, 6)
    assistant.close()
    assert not any("forward" in vars(m) for m in model.modules())
    ids = torch.tensor([prompt])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute == "bfloat16"):
        tokenizer = assistant.tokenizer
        plain = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([repeat_stopping_criterion(ids.shape[1])]),
            logits_processor=LogitsProcessorList([lead_in_logits_processor(tokenizer, ids.shape[1])]))
    tokens = plain[0, ids.shape[1]:].tolist()
    assert reply.completion_tokens == len(tokens)
    assert reply.answer == assistant.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def test_the_base_alone_keeps_float32_weights_on_cpu(tiny_gemma_path, monkeypatch):
    from kaggle_qa.assistant import load_answer_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = load_answer_model(tiny_gemma_path, None, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
