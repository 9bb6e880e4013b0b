"""The one prompt template: rendering, answer-only labels, truncation."""

import pytest

from kaggle_qa.modeling import load_tokenizer
from kaggle_qa.prompting import IGNORE_INDEX, encode_prompt, fit_context, render_prompt, tokenize_example


@pytest.fixture(scope="module")
def tokenizer(tiny_gemma_path):
    return load_tokenizer(tiny_gemma_path)


def test_render_prompt_with_and_without_context():
    with_context = render_prompt(" Kaggle hosts competitions. ", "What does Kaggle host?")
    assert with_context == "Context:\nKaggle hosts competitions.\n\nQuestion:\nWhat does Kaggle host?\n\nAnswer:\n"
    assert render_prompt("", "What is Kaggle?") == "Question:\nWhat is Kaggle?\n\nAnswer:\n"


def test_labels_cover_exactly_answer_and_eos(tokenizer):
    example = tokenize_example(tokenizer, "Notebooks run in Docker.", "What runs in Docker?", "Notebooks do.", 512)
    prompt_ids = encode_prompt(tokenizer, "Notebooks run in Docker.", "What runs in Docker?")
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.input_ids[0] == tokenizer.bos_token_id
    trained = [tok for tok, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "Notebooks do." + tokenizer.eos_token
    assert all(label == IGNORE_INDEX for label in example.labels[: example.prompt_length])
    assert not example.truncated


def test_truncation_keeps_bos_question_and_eos(tokenizer):
    context = "word " * 600
    example = tokenize_example(tokenizer, context, "Which word repeats?", "The word 'word'.", 128)
    assert len(example.input_ids) == 128 and example.truncated
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert "Which word repeats?" in tokenizer.decode(example.input_ids)


def test_tokenizer_pads_left(tokenizer):
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


CHUNKS = ["Best chunk: use count=True to count flags. " * 12, "Second chunk about prompts. " * 12,
          "Third chunk about colors. " * 12]


def test_fit_context_fits_the_budget_and_cuts_the_lowest_ranked_chunk_first(tokenizer):
    whole = len(encode_prompt(tokenizer, "\n\n".join(c.strip() for c in CHUNKS), "How?"))
    assert fit_context(tokenizer, CHUNKS, "How?", whole) == "\n\n".join(c.strip() for c in CHUNKS)
    for budget in (whole - 40, whole // 2, 60):
        context = fit_context(tokenizer, CHUNKS, "How?", budget)
        assert len(encode_prompt(tokenizer, context, "How?")) <= budget
        assert context.startswith("Best chunk: use count=True"), "the best chunk's opening is never cut first"
    assert "Third" not in fit_context(tokenizer, CHUNKS, "How?", whole // 2)
    assert "Second" not in fit_context(tokenizer, CHUNKS, "How?", 60)


def test_fit_context_cuts_the_kept_chunk_last(tokenizer):
    whole = len(encode_prompt(tokenizer, "\n\n".join(CHUNKS), "How?"))
    context = fit_context(tokenizer, CHUNKS, "How?", whole // 2, keep=2)
    assert context.count("Third chunk about colors.") == 12 and "Second" not in context
    assert len(encode_prompt(tokenizer, context, "How?")) <= whole // 2
