"""Quality filters: planted bad rows land in quarantine with the right reason; good rows stay."""

from __future__ import annotations

import pytest

from kaggle_qa.pipelines.synthesis.filters import filter_rows, rebalance
from kaggle_qa.pipelines.synthesis.near_duplicates import RougeIndex

CONTEXT = (
    "Getting Started competitions are the easiest, most approachable competitions on Kaggle. "
    "They have two-month rolling leaderboards. You can join a competition by clicking the Join "
    "Competition button."
)


def row(instruction, output, task_type="extractive_qa", context=CONTEXT, **extra):
    return {
        "input": context,
        "instruction": instruction,
        "output": output,
        "task_type": task_type,
        "chunk_id": "c0",
        "url": "https://www.kaggle.com/docs/competitions",
        "teacher": "test",
    } | extra


GOOD = row("How do I join a competition?", "You can join a competition by clicking the Join Competition button.")
PLANTED = {
    "translation task": row(
        "Translate 'competition' into Spanish.", "The Spanish word is competición, as in the docs."
    ),
    "non-English": row(
        "¿Cómo puedo unirme a una competición de Kaggle hoy mismo?",
        "Puedes unirte a una competición haciendo clic en el botón de unirse.",
    ),
    "recipe asks for at least": row("What are Getting Started competitions like?", "Easy."),
    "answer not supported by the input": row(
        "What are Getting Started competitions?", "They award a million dollars in prize money to the top ten teams."
    ),
    "empty instruction": row("   ", "You can join a competition by clicking the Join Competition button."),
    "near-duplicate question": row(
        "How do I join the competition?", "You can join a competition by clicking the Join Competition button."
    ),
}


@pytest.fixture
def recipe(params):
    return params["versions"]["v3"]


def test_each_planted_bad_row_is_quarantined_with_its_reason(params, recipe):
    rows = [GOOD, *PLANTED.values()]
    kept, dropped = filter_rows(rows, "v3", recipe, params["filters"], {})
    assert kept == [GOOD]
    assert len(dropped) == len(PLANTED)
    for (expected, planted), record in zip(PLANTED.items(), dropped):
        assert record["row"] is planted
        assert expected in record["reason"], record["reason"]
        assert record["version"] == "v3"


def test_near_duplicate_record_names_the_kept_question_and_score(params, recipe):
    _, dropped = filter_rows([GOOD, PLANTED["near-duplicate question"]], "v3", recipe, params["filters"], {})
    assert dropped[0]["of"] == GOOD["instruction"]
    assert dropped[0]["rouge_l"] > params["filters"]["max_question_rouge_l"]


def test_empty_input_rows_are_checked_against_their_source_chunk(params):
    v1 = params["versions"]["v1"]
    supported = row("How do I join a competition?", GOOD["output"], context="")
    invented = row("How do I win a competition?", "Winning requires a private GPU cluster from Google.", context="")
    kept, dropped = filter_rows([supported, invented], "v1", v1, params["filters"], {"c0": CONTEXT})
    assert kept == [supported]
    assert "not supported" in dropped[0]["reason"]


def test_one_word_label_is_fine_where_the_recipe_asks_for_short_answers(params):
    v2 = params["versions"]["v2"]
    short = row(
        "True or False: Getting Started competitions have two-month rolling leaderboards.",
        "True.",
        task_type="true_false",
        label="true",
    )
    kept, _ = filter_rows([short], "v2", v2, params["filters"], {})
    assert kept == [short]
    _, dropped = filter_rows([short], "v3", params["versions"]["v3"], params["filters"], {})
    assert "at least" in dropped[0]["reason"]


def test_rebalance_drops_the_latest_majority_rows_into_bounds():
    rows = [{"task_type": "true_false", "label": "true", "output": "True.", "n": i} for i in range(8)]
    rows += [{"task_type": "true_false", "label": "false", "output": "False.", "n": 8 + i} for i in range(2)]
    rows += [{"task_type": "extractive_qa", "output": "x", "n": 99}]
    kept, surplus = rebalance(rows, "true_false", "true", 0.5, 0.05)
    trues = [r for r in kept if r.get("label") == "true"]
    assert [r["n"] for r in trues] == [0, 1, 2]  # 3 of 5: within 0.5 ± 0.05 but for one row
    assert len(surplus) == 5 and all(r["label"] == "true" for r in surplus)
    assert {"n": 99, "task_type": "extractive_qa", "output": "x"} in kept


def test_rouge_index_agrees_with_rouge_score():
    from rouge_score.rouge_scorer import RougeScorer

    texts = [
        "How do I join a competition on Kaggle?",
        "What is a Kaggle notebook used for?",
        "Where can I find the leaderboard of a competition?",
    ]
    index = RougeIndex(0.0)
    for text in texts:
        index.add(text)
    query = "How can I join a Kaggle competition?"
    scorer = RougeScorer(["rougeL"])
    expected = max(scorer.score(t, query)["rougeL"].fmeasure for t in texts)
    assert index.matches(query)[0][0] == pytest.approx(expected)


def test_training_rows_repeating_a_test_question_about_the_same_text_are_dropped(params, recipe):
    test_context = "To merge teams, the Team Leader must accept the merge request. Teams merge before the deadline."
    test_questions = RougeIndex(params["filters"]["max_question_rouge_l"])
    test_questions.add("How do I merge teams?", payload=test_context)
    repeated = row(  # another chunk of the docs, repeating the passage
        "How do I merge two teams?",
        "To merge teams, the Team Leader must accept the merge request.",
        context=test_context,
    )
    same_template_other_text = row("How do I join a competition?", GOOD["output"])
    kept, dropped = filter_rows(
        [repeated, same_template_other_text], "v3", recipe, params["filters"], {}, held_out=test_questions
    )
    assert kept == [same_template_other_text]
    assert dropped[0]["reason"] == "test-set question about the same text"
    assert dropped[0]["of"] == "How do I merge teams?"
