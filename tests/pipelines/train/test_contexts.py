"""Training contexts as the assistant sees them (train/contexts.py): a real index, a real tokenizer."""

from __future__ import annotations

import pytest

from kaggle_qa.modeling import load_tokenizer
from kaggle_qa.pipelines.train.contexts import add_retrieved_contexts
from kaggle_qa.prompting import encode_prompt
from kaggle_qa.retrieval import build_index

TEXTS = {
    "count": "Use count=True on an option to count how often a flag was given, as in -vvv.",
    "multiple": "Pass multiple=True to an option to accept it several times; the values arrive as a tuple.",
    "prompt": "Give an option a prompt string and Click asks for the value when it is missing.",
    "envvar": "Options can read their values from environment variables with auto_envvar_prefix.",
    "nargs": "Set nargs=-1 on an argument to accept an unlimited number of values.",
    "colors": "click.style colors terminal output with ANSI codes such as fg='green'.",
}
VALIDATION = {"count", "colors"}
RETRIEVAL = {"method": "bm25", "top_k": 3, "rrf_k": 60, "batch_size": 8}


def _row(chunk: str, question: str, task: str = "extractive_qa", output: str | None = None) -> dict:
    return {"chunk_id": chunk, "input": TEXTS[chunk], "instruction": question, "task_type": task,
            "output": output or TEXTS[chunk].split(";")[0]}


@pytest.fixture(scope="module")
def index():
    return build_index([{"chunk_id": key, "url": f"https://docs.test/{key}.html", "title": key.title(),
                         "heading_path": [key], "text": text} for key, text in TEXTS.items()])


@pytest.fixture(scope="module")
def base_model(tiny_gemma_path):
    return tiny_gemma_path


TRAIN = [
    _row("multiple", "How do I accept an option several times?"),
    _row("prompt", "How can an option ask for a missing value?"),
    _row("envvar", "How do options read environment variables?"),
    _row("nargs", "How do I accept an unlimited number of arguments?"),
    _row("nargs", "True or false: nargs=-1 accepts any number of values.", "true_false", "True. Set nargs=-1."),
]
VALID = [_row("count", "How do I count flags?"), _row("colors", "How do I color output?")]


def _params(share: float, max_length: int = 512) -> dict:
    return {"max_length": max_length, "retrieved_context": {"share": share, "tasks": ["extractive_qa"], "seed": 0}}


def test_open_questions_get_the_top_k_of_their_side_with_their_own_chunk(index, base_model):
    train, validation, report = add_retrieved_contexts(TRAIN, VALID, index, base_model, RETRIEVAL, _params(1.0))
    for row, before in zip(train[:4], TRAIN[:4]):
        assert before["input"] in row["input"], "the answering chunk is always in the context"
        assert row["input"].count("\n\n") == 2, "top_k = 3 chunks"
        assert not any(TEXTS[key] in row["input"] for key in VALIDATION), "no validation chunk in a training context"
        assert row["context"] == "retrieved"
    assert train[4] == TRAIN[4], "a labelled row keeps its one chunk"
    for row in validation:
        others = [text for key, text in TEXTS.items() if key not in VALIDATION]
        assert not any(text in row["input"] for text in others), "validation distractors come from validation chunks"
    assert report["train"]["retrieved_context_rows"] == 4 and report["validation"]["retrieved_context_rows"] == 2
    assert TRAIN[0]["input"] == TEXTS["multiple"], "the input rows are not modified in place"


def test_share_zero_leaves_the_rows_alone_and_a_bad_share_is_an_error(index, base_model):
    train, validation, report = add_retrieved_contexts(TRAIN, VALID, index, base_model, RETRIEVAL, _params(0))
    assert (train, validation, report) == (TRAIN, VALID, {"share": 0})
    with pytest.raises(ValueError, match="retrieved_context.share"):
        add_retrieved_contexts(TRAIN, VALID, index, base_model, RETRIEVAL, _params(1.5))


def test_a_long_context_is_fitted_without_losing_the_answering_chunk(index, base_model, tiny_gemma_path):
    tokenizer = load_tokenizer(tiny_gemma_path)
    train, _, _ = add_retrieved_contexts(TRAIN, VALID, index, base_model, RETRIEVAL, _params(1.0, max_length=80))
    for row, before in zip(train[:4], TRAIN[:4]):
        answer = len(tokenizer(row["output"], add_special_tokens=False)["input_ids"]) + 1
        assert len(encode_prompt(tokenizer, row["input"], row["instruction"])) + answer <= 80
        assert before["input"] in row["input"]


def test_repeats_multiply_open_questions_on_the_training_side_only(index, base_model):
    params = _params(0.5)
    params["retrieved_context"]["repeats"] = 3
    train, validation, report = add_retrieved_contexts(TRAIN, VALID, index, base_model, RETRIEVAL, params)
    assert len(train) == 4 * 3 + 1 and len(validation) == len(VALID)
    assert sum(row["instruction"] == TRAIN[0]["instruction"] for row in train) == 3
    assert sum(row["task_type"] == "true_false" for row in train) == 1
    assert report["train"]["open_question_repeats"] == 3 and report["validation"]["open_question_repeats"] == 1
