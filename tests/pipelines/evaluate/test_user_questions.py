"""The user's question file (loader, split), the refusal calibration's disjoint parts, the user-question
node in retrieved mode (gold page cited, refused, correct), the three modes over the whole test set with
the gold mode taken from the main evaluation, and max_new_tokens read back from training_params.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DatasetError

from kaggle_qa.answer_length import HEADROOM, answer_token_stats
from kaggle_qa.pipelines.evaluate import modes as modes_module
from kaggle_qa.pipelines.evaluate import nodes as eval_nodes
from kaggle_qa.pipelines.evaluate.modes import MODES, evaluate_context_modes
from kaggle_qa.pipelines.evaluate.nodes import (
    answer_base, answer_fine_tuned, prepare_test_set, read_adapter_settings, score_predictions,
)
from kaggle_qa.pipelines.evaluate.retrieval_eval import (
    calibrate_refusal, calibrate_threshold, calibration_side, evaluate_retrieval, off_topic_rows,
)
from kaggle_qa.pipelines.evaluate.user_eval import evaluate_user_questions, page_key, rouge_l_recall
from kaggle_qa.retrieval import build_index, relevance_threshold
from kaggle_qa.user_questions import (
    UserQuestionsDataset, UserQuestionsError, fact_found, in_selection, report_rows, selection_rows,
    validate_user_questions,
)

CHUNKS = [
    {"chunk_id": "a", "url": "https://docs.example.org/en/1.0/submitting.html", "title": "Submitting",
     "heading_path": ["Competitions", "Submitting predictions"],
     "text": "To make a submission, upload a CSV file with your predictions on the competition's Submit page."},
    {"chunk_id": "b", "url": "https://docs.example.org/en/1.0/notebooks/", "title": "Notebooks",
     "heading_path": ["Notebooks", "Accelerators"],
     "text": "Notebooks can use a free GPU or TPU accelerator for a limited number of hours each week."},
    {"chunk_id": "c", "url": "https://docs.example.org/en/1.0/organizations.html", "title": "Organizations",
     "heading_path": ["Organizations"],
     "text": "An organization profile stays pending until it is approved; non-members cannot view it."},
]
TEST_ROWS = [
    {"instruction": "How do I submit my predictions file?", "input": CHUNKS[0]["text"], "task_type": "extractive_qa",
     "output": "Upload a CSV file on the Submit page.", "chunk_id": "a"},
    {"instruction": "True or False: notebooks can use a free GPU accelerator.", "input": CHUNKS[1]["text"],
     "task_type": "true_false", "output": "True. Notebooks can use a free GPU.", "chunk_id": "b"},
    {"instruction": "Can non-members view a pending organization profile?", "input": CHUNKS[2]["text"],
     "task_type": "yes_no", "output": "No. Non-members cannot view it.", "chunk_id": "c"},
]
USER_QUESTIONS = [
    {"question": "Where do I upload my predictions CSV for a competition?", "expected_answer":
     "Upload a CSV file with your predictions on the competition's Submit page.",
     "url": "http://127.0.0.1:8000/en/1.0/submitting.html#how"},          # the page retrieval cites
    {"question": "How many hours a week can a notebook use a free GPU?", "expected_answer":
     "A limited number of hours each week.", "url": "https://docs.example.org/en/1.0/quotas.html"},  # a page not cited
    {"question": "What is the capital of France?", "expected_answer": "Paris.",
     "url": "https://docs.example.org/en/1.0/"},                          # off-topic: refused
]
ALL_REPORTED = {"selection_fraction": 0.0, "correct_recall": 0.5}


@pytest.fixture(scope="module")
def params(project_root):
    conf = project_root / "conf/base"
    evaluate = yaml.safe_load((conf / "parameters_evaluate.yml").read_text())
    return {
        "retrieval": yaml.safe_load((conf / "parameters_ingestion.yml").read_text())["retrieval"],
        "evaluate": evaluate["evaluate"] | {"batch_size": 2, "dtype": "float32"},
        "user_questions": evaluate["user_questions"],
        "refusal_calibration": evaluate["refusal_calibration"],
        "context_modes": yaml.safe_load((conf / "parameters_assistant.yml").read_text())["context_modes"],
        "domain": yaml.safe_load((conf / "parameters.yml").read_text())["domain"],
    }


@pytest.fixture(scope="module")
def index():
    return build_index(CHUNKS)


def save_adapter(base_model: str, folder: Path, seed: int, **recorded) -> str:
    """A LoRA adapter with non-zero weights, saved as train saves it (training_params.json with the
    training answers' token lengths)."""
    from peft import LoraConfig, get_peft_model

    from kaggle_qa.modeling import load_model, model_identity
    from kaggle_qa.prompting import PROMPT_TEMPLATE_VERSION

    model = get_peft_model(load_model(base_model, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(seed)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)
    model.save_pretrained(folder)
    (folder / "base_model.json").write_text(json.dumps(model_identity(base_model)))
    training = {"max_length": 256, "prompt_template_version": PROMPT_TEMPLATE_VERSION,
                "answer_tokens": answer_token_stats([2, 3, 3, 4])} | recorded
    (folder / "training_params.json").write_text(json.dumps(training))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_gemma_path, tmp_path_factory):
    return save_adapter(tiny_gemma_path, tmp_path_factory.mktemp("adapter"), seed=0)


# --- the question file ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ('[{"question": "q", "expected_answer": "a", "url": "https://x.org/"},\n {"question": ', r"line 2, column \d+"),
    ('{"question": "q"}', "expected a JSON list of questions, got dict"),
    ('[{"question": "q", "expected_answer": "a", "url": "https://x.org/"}, "just a string"]', "row 1 is str"),
    ('[{"question": "q", "url": "https://x.org/"}]', "row 0 is missing key 'expected_answer'"),
    ('[{"question": "q", "expected_answer": "  ", "url": "https://x.org/"}]', "row 0 key 'expected_answer' must be a non-empty"),
    ('[{"question": "q", "expected_answer": "a", "url": "x.org/page"}]', "row 0 url 'x.org/page' is not an http"),
    ('[{"question": "Q  one", "expected_answer": "a", "url": "https://x.org/"},'
     ' {"question": "q one", "expected_answer": "b", "url": "https://x.org/"}]', "row 1 repeats the question of row 0"),
])
def test_a_bad_question_file_fails_naming_the_file_and_the_row(tmp_path, content, message):
    path = tmp_path / "my_questions.json"
    path.write_text(content)
    with pytest.raises((UserQuestionsError, DatasetError), match=message) as error:  # kedro wraps load errors
        UserQuestionsDataset(str(path)).load()
    assert str(path) in str(error.value)


def test_no_file_configured_loads_as_none_and_a_missing_file_is_named(tmp_path):
    assert UserQuestionsDataset(None).load() is None
    good = tmp_path / "q.json"
    good.write_text(json.dumps(USER_QUESTIONS))
    assert UserQuestionsDataset(str(good)).load() == USER_QUESTIONS
    with pytest.raises(DatasetError, match="nowhere.json does not exist"):
        UserQuestionsDataset(str(tmp_path / "nowhere.json")).load()


def test_the_split_is_deterministic_disjoint_and_stable_when_rows_change():
    rows = [{"question": f"How do I configure option number {i}?", "expected_answer": "x", "url": "https://x.org/"}
            for i in range(400)]
    params = {"selection_fraction": 0.25}
    selected, reported = selection_rows(rows, params), report_rows(rows, params)
    assert selected == selection_rows(list(rows), params)  # the same on every call
    assert not {r["question"] for r in selected} & {r["question"] for r in reported}
    assert len(selected) + len(reported) == len(rows) and 60 < len(selected) < 140
    # a row keeps its side when others are removed or reordered, or its case/spacing changes
    assert selection_rows(list(reversed(rows[:50])), params) == list(reversed([r for r in selected if r in rows[:50]]))
    assert all(in_selection("  " + r["question"].upper(), 0.25) for r in selected)
    assert selection_rows(rows, {"selection_fraction": 0.0}) == [] and report_rows(rows, {"selection_fraction": 1.0}) == []
    assert selection_rows(None, params) == [] and report_rows(None, params) == []


# --- refusal calibration ----------------------------------------------------------------------------

def _questions_on(side: bool, n: int, stem: str) -> list[str]:
    """n questions that fall on the calibration side (side=True) or the reported side."""
    found, i = [], 0
    while len(found) < n:
        question = f"{stem} {i}?"
        if calibration_side(question, 0.5) == side:
            found.append(question)
        i += 1
    return found


def test_the_threshold_is_chosen_on_the_calibration_part_and_reported_on_the_other():
    """Reported-side questions are placed so that any threshold chosen with them would differ, and
    their rates are the opposite of the calibration side's: the test fails if the parts were mixed."""
    in_cal, in_rep = _questions_on(True, 5, "How do I use feature"), _questions_on(False, 5, "How do I use feature")
    near_cal, near_rep = _questions_on(True, 4, "How does the rival tool do"), _questions_on(False, 4, "How does the rival tool do")
    far_cal, far_rep = _questions_on(True, 3, "Who painted picture"), _questions_on(False, 3, "Who painted picture")
    in_domain = [(q, 0.8) for q in in_cal] + [(q, 0.45) for q in in_rep]
    off_topic = ([(q, "near", 0.4) for q in near_cal] + [(q, "near", 0.7) for q in near_rep]
                 + [(q, "far", 0.1) for q in far_cal] + [(q, "far", 0.1) for q in far_rep])
    chosen = calibrate_refusal(in_domain, off_topic, 0.5)
    expected = calibrate_threshold(np.array([0.8] * 5), np.array([0.4] * 4 + [0.1] * 3))
    assert chosen["threshold"] == pytest.approx(expected["threshold"]) == pytest.approx(0.6)
    every = calibrate_threshold(np.array([s for _, s in in_domain]), np.array([s for _, _, s in off_topic]))
    assert every["threshold"] != pytest.approx(chosen["threshold"])  # choosing on all rows would give another
    assert chosen["calibration"] | {"balanced_accuracy": 1.0} == chosen["calibration"]
    assert chosen["calibration"]["near_refused"] == 1.0 and chosen["calibration"]["in_domain_answered"] == 1.0
    reported = chosen["reported"]
    assert reported["in_domain_answered"] == 0.0 and reported["in_domain_questions"] == 5  # 0.45 < 0.6
    assert reported["near_refused"] == 0.0 and reported["near_questions"] == 4  # 0.7 >= 0.6
    assert reported["far_refused"] == 1.0 and reported["far_questions"] == 3
    assert set(chosen["calibration_questions"]) == set(in_cal + near_cal + far_cal)
    assert not set(chosen["calibration_questions"]) & set(in_rep + near_rep + far_rep)


def test_near_and_far_off_topic_questions_count_as_two_classes():
    """Ten far questions that any threshold refuses must not outvote two near ones: pooled into one
    off-topic class the best threshold would be 0.2 (answer everything in-domain, let both near
    questions through); with in-domain, near and far as three classes it is 0.575 (3 of 5 in-domain
    answered, both near and all far refused)."""
    in_domain = np.array([0.3, 0.5, 0.6, 0.7, 0.8])
    near, far = np.array([0.45, 0.55]), np.array([0.1] * 10)
    pooled = calibrate_threshold(in_domain, np.concatenate([near, far]))
    assert pooled["threshold"] == pytest.approx(0.2)
    chosen = calibrate_threshold(in_domain, {"near": near, "far": far})
    assert chosen["threshold"] == pytest.approx(0.575)
    assert chosen["balanced_accuracy"] == pytest.approx((0.6 + 1 + 1) / 3)
    assert chosen["off_topic_refused"] == 1.0 and chosen["in_domain_answered"] == pytest.approx(0.6)
    # a floor on the in-domain answered rate: 0.475 answers 4 of 5 and refuses one near question
    floored = calibrate_threshold(in_domain, {"near": near, "far": far}, min_answered=0.8)
    assert floored["threshold"] == pytest.approx(0.475) and floored["in_domain_answered"] == pytest.approx(0.8)
    assert calibrate_threshold(in_domain, {"near": near, "far": far}, min_answered=0.6)["threshold"] == pytest.approx(0.575)
    # an empty kind is no class: with no near questions the far ones alone decide
    assert calibrate_threshold(in_domain, {"near": np.array([]), "far": far})["threshold"] == pytest.approx(0.2)


def test_off_topic_files_of_objects_or_strings(project_root):
    rows = off_topic_rows(["What is the capital of France?", {"question": "How do I install Rust?", "kind": "near"}])
    assert rows == [{"question": "What is the capital of France?", "kind": "far"},
                    {"question": "How do I install Rust?", "kind": "near"}]
    with pytest.raises(ValueError, match="off_topic_questions: row 1 kind 'close' is not one of"):
        off_topic_rows(["a?", {"question": "b?", "kind": "close"}])
    with pytest.raises(ValueError, match="off_topic_questions: row 0 is neither"):
        off_topic_rows([{"kind": "far"}])
    assert {row["kind"] for row in off_topic_rows(json.loads(
        (project_root / "data/01_raw/off_topic_questions.json").read_text()))} <= {"near", "far"}


def test_retrieval_metrics_record_the_threshold_the_assistant_reads_back(index, params, project_root):
    off_topic = json.loads((project_root / "data/01_raw/off_topic_questions.json").read_text())
    shipped_near = sum(isinstance(q, dict) and q.get("kind") == "near" for q in off_topic)
    off_topic += [{"question": "How do I submit a pull request on GitHub?", "kind": "near"},
                  {"question": "How do I request a GPU on Google Colab?", "kind": "near"}]
    in_domain = TEST_ROWS * 4  # enough in-domain questions for both parts
    in_domain = [dict(row, instruction=f"{row['instruction']} ({n})") for n, row in enumerate(in_domain)]
    result, markdown = evaluate_retrieval(index, in_domain, off_topic, params["retrieval"], params["evaluate"],
                                          USER_QUESTIONS, {"selection_fraction": 1.0}, params["refusal_calibration"])
    relevance = result["relevance"]
    assert relevance["in_domain_from_user_questions"] == len(USER_QUESTIONS)
    assert relevance["off_topic_questions"] == {"near": shipped_near + 2, "far": len(off_topic) - shipped_near - 2}
    chosen = relevance["chosen"]["threshold"]
    assert relevance_threshold({"relevance_threshold": None}, result) == chosen
    assert relevance_threshold({"relevance_threshold": 0.2}, result) == 0.2  # an explicit override wins
    with pytest.raises(ValueError, match="no refusal threshold: retrieval_metrics records none"):
        relevance_threshold({"relevance_threshold": None}, None)
    assert "near off-topic refused" in markdown and "reported (disjoint)" in markdown
    assert f"reads the chosen threshold {chosen:.3f} back" in markdown
    assert relevance["chosen"]["lift_threshold"] is None and "lift threshold" not in markdown

    # with the fine-tuned model's context lift of every question: near questions worded like the docs' own (as
    # relevant as in-domain ones: relevance alone cannot refuse them), lifted less than in-domain ones
    off_topic = off_topic + [{"question": f"{row['instruction']} On another website, that is? ({n})", "kind": "near"}
                             for n, row in enumerate(TEST_ROWS * 3)]
    questions = [row["instruction"] for row in in_domain] + [q["question"] for q in USER_QUESTIONS]
    lifts = {q: 2.0 + 0.01 * i for i, q in enumerate(questions)}
    lifts |= {(q if isinstance(q, str) else q["question"]): (0.1 if not isinstance(q, str) and q.get("kind") == "near"
                                                             else -1.0) for q in off_topic}
    lifted, lifted_markdown = evaluate_retrieval(
        index, in_domain, off_topic, params["retrieval"], params["evaluate"], USER_QUESTIONS, {"selection_fraction": 1.0},
        params["refusal_calibration"], {"model": "fine-tuned", "compute_dtype": "float32", "budget": 300, "scores": lifts})
    both = lifted["relevance"]
    assert 0.1 < both["chosen"]["lift_threshold"] < 2.0 and both["lift"]["budget"] == 300
    alone = both["without_lift"]  # the comparison row: relevance alone, on the same parts
    assert alone["reported"]["near_refused"] < both["chosen"]["reported"]["near_refused"] == 1.0
    assert both["chosen"]["reported"]["in_domain_answered"] >= alone["reported"]["in_domain_answered"]
    assert "reported, relevance alone (comparison)" in lifted_markdown and "| lift " in lifted_markdown
    with pytest.raises(ValueError, match="no lift for 1 calibration question"):
        evaluate_retrieval(index, in_domain, off_topic, params["retrieval"], params["evaluate"], USER_QUESTIONS,
                           {"selection_fraction": 1.0}, params["refusal_calibration"],
                           {"scores": {q: v for q, v in lifts.items() if q != questions[0]}})


# --- answer length ------------------------------------------------------------------------------------

def test_max_new_tokens_comes_from_the_recorded_answer_lengths(tiny_gemma_path, tmp_path, params):
    adapter = save_adapter(tiny_gemma_path, tmp_path / "a", seed=1, answer_tokens=answer_token_stats([4] * 98 + [30, 40]))
    recorded = json.loads((Path(adapter) / "training_params.json").read_text())["answer_tokens"]
    assert recorded["p99"] == pytest.approx(30.1) and recorded["max"] == 40  # numpy's linear quantile
    expected = math.ceil(HEADROOM * recorded["p99"])
    assert expected == 38
    evaluate = params["evaluate"] | {"max_new_tokens": None}
    assert read_adapter_settings(tiny_gemma_path, adapter, evaluate)["max_new_tokens"] == expected
    assert read_adapter_settings(tiny_gemma_path, adapter, evaluate | {"max_new_tokens": 7})["max_new_tokens"] == 7
    capped = save_adapter(tiny_gemma_path, tmp_path / "c", seed=1, max_length=40)
    json_path = Path(capped) / "training_params.json"
    json_path.write_text(json.dumps(json.loads(json_path.read_text()) | {"answer_tokens": {"p99": 300, "count": 1}}))
    assert read_adapter_settings(tiny_gemma_path, capped, evaluate)["max_new_tokens"] == 20  # max_length // 2
    old = save_adapter(tiny_gemma_path, tmp_path / "old", seed=1, answer_tokens=None)
    with pytest.raises(ValueError, match=r"records no answer_tokens.p99 .* set max_new_tokens"):
        read_adapter_settings(tiny_gemma_path, old, evaluate)

    from kaggle_qa.assistant import Assistant

    assistant = Assistant.load(tiny_gemma_path, adapter, build_index(CHUNKS), params["retrieval"],
                               {"dtype": "float32", "max_new_tokens": None, "max_length": None},
                               retrieval_metrics={"relevance": {"chosen": {"threshold": 0.3}}})
    assert assistant.max_new_tokens == expected and assistant.relevance_threshold == 0.3 and assistant.max_length == 256


# --- the user's questions in retrieved mode -----------------------------------------------------------

def test_page_key_and_the_correct_rule():
    assert page_key("http://127.0.0.1:8000/en/1.0/submitting.html#how") == page_key(
        "https://docs.example.org/en/1.0/submitting/") == "/en/1.0/submitting"
    assert page_key("https://docs.example.org/en/1.0/index.html") == page_key("https://docs.example.org/en/1.0/")
    assert rouge_l_recall("Run scrapy crawl -O items.json", "To dump into a JSON file:") < 0.3
    assert rouge_l_recall("Upload a CSV file", "To submit, upload a CSV file on the Submit page.") == 1.0


def test_user_questions_answered_as_the_assistant_answers_them(tiny_gemma_path, tiny_adapter, index, params,
                                                               tmp_path, monkeypatch):
    loads = []
    real_infer = eval_nodes._infer
    monkeypatch.setattr(eval_nodes, "_infer", lambda model, base_model, rows, settings, params, label: loads.append(label)
                        or real_infer(model, base_model, rows, settings, params, label))
    retrieval = params["retrieval"] | {"relevance_threshold": 0.3, "method": "bm25", "top_k": 1}
    evaluate = params["evaluate"] | {"max_new_tokens": None}
    run = lambda adapter, cache, user=ALL_REPORTED: evaluate_user_questions(  # noqa: E731
        tiny_gemma_path, adapter, USER_QUESTIONS, index, retrieval, None, evaluate, user, params["domain"], cache)
    metrics, predictions, markdown, base = run(tiny_adapter, {})
    assert [p["refused"] for p in predictions] == [False, False, True]
    assert [p["gold_page_cited"] for p in predictions] == [True, False, False]
    assert predictions[0]["cited_pages"] == ["/en/1.0/submitting"]
    refusal = "The Kaggle documentation does not cover this question"
    assert predictions[2]["base_answer"].startswith(refusal) and predictions[2]["fine_tuned_answer"].startswith(refusal)
    assert not predictions[2]["base_correct"] and not predictions[2]["fine_tuned_correct"]
    rates = metrics["rates"]["fine_tuned"]
    assert rates["refused"]["value"] == pytest.approx(1 / 3) and rates["refused"]["count"] == 1
    assert rates["gold_page_cited"]["value"] == pytest.approx(1 / 3)
    assert metrics["max_new_tokens"] == math.ceil(HEADROOM * answer_token_stats([2, 3, 3, 4])["p99"])
    assert metrics["metrics"]["base"]["overall"]["answer_loss"] > 0
    assert "| Gold page cited" in markdown and "Where do I upload my predictions CSV" in markdown
    assert loads == ["base", "fine_tuned"]
    # correct = not refused and ROUGE-L recall of the expected answer >= correct_recall
    for p in predictions:
        for label in ("base", "fine_tuned"):
            recall = rouge_l_recall(p["expected_answer"], p[f"{label}_answer"]) if not p["refused"] else 0.0
            assert p["scores"][label]["rougeL_recall"] == pytest.approx(recall)
            assert p[f"{label}_correct"] == (not p["refused"] and recall >= ALL_REPORTED["correct_recall"])


def test_no_user_question_file_is_said_in_the_report(tiny_gemma_path, tiny_adapter, index, params):
    metrics, predictions, markdown, base = evaluate_user_questions(
        tiny_gemma_path, tiny_adapter, None, index, params["retrieval"], None, params["evaluate"],
        params["user_questions"], params["domain"], {})
    assert metrics["skipped"] and predictions == [] and base["key"] is None
    assert "No user question file is configured" in markdown and "## Your questions" in markdown


# --- three context modes over the whole test set --------------------------------------------------------

def test_three_modes_cover_the_whole_test_set_and_reuse_the_main_evaluation(tiny_gemma_path, tiny_adapter, index,
                                                                            params, monkeypatch):
    evaluate = params["evaluate"] | {"max_new_tokens": 3}
    test_set = prepare_test_set(TEST_ROWS, evaluate)
    settings = read_adapter_settings(tiny_gemma_path, tiny_adapter, evaluate)
    base = answer_base(tiny_gemma_path, test_set, settings, evaluate, {})
    raw = answer_fine_tuned(tiny_gemma_path, tiny_adapter, test_set, settings, evaluate, base)
    predictions = score_predictions(test_set, raw, evaluate)
    counted = {"base": 0, "fine_tuned": 0, "rows": []}
    real_infer = eval_nodes._infer

    def counting_infer(model, base_model, rows, settings, params, label):
        counted[label] += 1
        counted["rows"].append(len(rows))
        return real_infer(model, base_model, rows, settings, params, label)

    monkeypatch.setattr(eval_nodes, "_infer", counting_infer)
    scored = []
    real_score = modes_module.score_answers
    monkeypatch.setattr(modes_module, "score_answers",
                        lambda rows, answers, **kw: scored.append(kw["label"]) or real_score(rows, answers, **kw))
    context_modes = params["context_modes"]
    assert context_modes["limit"] is None  # the default: every question
    summary, markdown, mode_base = evaluate_context_modes(
        tiny_gemma_path, tiny_adapter, test_set, raw, predictions, index, params["retrieval"], evaluate, context_modes, {})
    assert summary["questions"] == len(test_set) == 3 and list(summary["modes"]) == list(MODES)
    # one pass per model over the two other modes; gold is never recomputed
    assert counted == {"base": 1, "fine_tuned": 1, "rows": [6, 6]}
    assert not any("gold" in label for label in scored) and len(scored) == 4  # gold: the main evaluation's scores
    for label in ("base", "fine_tuned"):
        assert summary["answers"]["gold"][label] == [r["answer"] for r in raw["models"][label]["rows"]]
        losses = [summary["modes"][mode]["metrics"][label]["overall"]["answer_loss"] for mode in MODES]
        assert all(np.isfinite(losses)) and len(set(losses)) == 3
    assert summary["retrieval"]["gold_chunk_retrieved"] == 1.0
    assert f"All {len(test_set)} evaluated test questions" in markdown
    # a second run: the base model's retrieved/none results come from the cache
    cache = {mode_base["key"]: {**mode_base, "saved_version": "v1"}}
    again, again_markdown, _ = evaluate_context_modes(
        tiny_gemma_path, tiny_adapter, test_set, raw, predictions, index, params["retrieval"], evaluate, context_modes, cache)
    assert counted["base"] == 1 and counted["fine_tuned"] == 2
    assert again["answers"]["none"]["base"] == summary["answers"]["none"]["base"]
    assert "**reused** from `context_modes_base_answers` version v1" in again_markdown
    assert modes_module.mode_rows(test_set[:1], ["gold", "none"], ["ctx"])[0]["id"] == "none:0"


# --- key facts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, fact, found", [
    ("Use multiple = True on the option.", "multiple=True", True),
    ("Use `multiple=True`.", "multiple=True", True),
    ("It is an option.", "on", False),                    # whole words: "on" is not in "option"
    ('"on" converts to True.', "on", True),
    ("nargs=-10", "nargs=-1", False),
    ("Use --shout/--no-shout.", "/--no-", True),
    ("Run $ pip install click", ["conda install click", "pip install click"], True),
    ("To dump into a JSON file:", "-O quotes.json", False),
])
def test_fact_found(answer, fact, found):
    assert fact_found(answer, fact) is found


@pytest.mark.parametrize("facts", ["count=True", [], [""], [["a", 3]], [None]])
def test_bad_key_facts_name_the_row(facts):
    rows = [dict(USER_QUESTIONS[0]), dict(USER_QUESTIONS[1], key_facts=facts)]
    with pytest.raises(UserQuestionsError, match=r"questions.json: row 1 key 'key_facts'"):
        validate_user_questions(rows, "questions.json")


def test_key_facts_decide_correct_and_the_recall_rule_is_kept_beside(tiny_gemma_path, tiny_adapter, index, params):
    retrieval = params["retrieval"] | {"relevance_threshold": 0.0, "method": "bm25", "top_k": 1}
    questions = [dict(USER_QUESTIONS[0], key_facts=["Submit page"]), dict(USER_QUESTIONS[1], key_facts=["hours"])]
    metrics, predictions, markdown, _ = evaluate_user_questions(
        tiny_gemma_path, tiny_adapter, questions, index, retrieval, None, params["evaluate"], ALL_REPORTED,
        params["domain"], {})
    for p, question in zip(predictions, questions):
        for label in ("base", "fine_tuned"):
            stated = [fact_found(p[f"{label}_answer"], fact) for fact in question["key_facts"]]
            assert p[f"{label}_correct"] == all(stated)
            assert p["scores"][label]["key_facts_found"] == sum(stated) / len(stated)
            recall = p["scores"][label]["rougeL_recall"]
            assert p["scores"][label]["recall_correct"] == float(recall >= ALL_REPORTED["correct_recall"])
    assert "key_facts_found" in metrics["rates"]["fine_tuned"] and "Key facts stated" in markdown
