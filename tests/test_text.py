"""The project's one sentence splitter and one definition of support (kaggle_qa.text)."""

from __future__ import annotations

import pytest

from kaggle_qa.text import content_tokens, numbers, split_sentences, strip_label, support, unsupported_numbers


def test_sentences_split_per_line_not_after_abbreviations_or_initials():
    text = "Use a GPU, e.g. a P100. Then save. Done!\n- First item\n- Second item. Ask J. Smith."
    assert split_sentences(text) == [
        "Use a GPU, e.g. a P100.",
        "Then save.",
        "Done!",
        "- First item",
        "- Second item.",
        "Ask J. Smith.",
    ]
    assert split_sentences("```\nx = 1. Y = 2\n```") == ["```\nx = 1. Y = 2\n```"]
    assert split_sentences("  \n") == []


def test_content_tokens_stem_drop_stop_words_and_keep_every_number():
    assert content_tokens("The Teams are merging 5 notebooks, 13,000 rows and 1.5 GB.") == [
        "team",
        "merg",
        "5",
        "notebook",
        "13000",
        "row",
        "1.5",
        "gb",
    ]
    assert numbers("Up to 13,000 images in 2 days") == {"13000", "2"}


def test_support_is_the_share_of_content_tokens_in_the_context():
    context = "The daily submission limit is 5. Teams merge before the deadline."
    assert support("Teams merged before the deadline.", context) == 1.0  # stemmed
    assert support("The limit is 10 submissions.", context) == pytest.approx(2 / 3)  # {limit, 10, submiss}
    assert support("It is.", context) is None  # nothing to check
    assert unsupported_numbers("The limit is 10, not 5.", context) == ["10"]


def test_a_leading_label_is_split_off():
    assert strip_label("True. GPUs are free.") == ("true", "GPUs are free.")
    assert strip_label("No, 5 is the limit.") == ("no", "5 is the limit.")
    assert strip_label("Entailment.") == ("entailment", "")
    assert strip_label("Notebooks are free.") == (None, "Notebooks are free.")
