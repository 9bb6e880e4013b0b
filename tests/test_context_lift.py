"""The context lift (kaggle_qa.context_lift): the answering model's judgement of whether the retrieved context
explains a question, its calibration beside the relevance threshold, and the assistant's refusal on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaggle_qa.assistant import Assistant
from kaggle_qa.context_lift import context_lift, lift_threshold, lifts
from kaggle_qa.modeling import load_model, load_tokenizer
from kaggle_qa.pipelines.evaluate.retrieval_eval import (
    calibrate_refusal, calibrate_threshold, calibrate_with_lift, calibration_side,
)
from kaggle_qa.prompting import render_prompt
from kaggle_qa.retrieval import Retrieval, Retriever, build_index, refusal_reason

CHUNKS = [
    {"chunk_id": "a", "url": "https://docs.example.org/options", "title": "Options", "heading_path": ["Options"],
     "text": "Options take a default value. Pass multiple=True to let an option be given several times; "
             "the values arrive as a tuple."},
    {"chunk_id": "b", "url": "https://docs.example.org/testing", "title": "Testing", "heading_path": ["Testing"],
     "text": "The CliRunner invokes a command in isolation and captures its output for assertions."},
]


def _full_sequence_lift(model, tokenizer, context: str, question: str, compute: str = "float32") -> float:
    """The lift computed the long way: the whole prompt's logits, the question's tokens picked by position."""
    def mean_logprob(head: str) -> float:
        prefix = [tokenizer.bos_token_id, *tokenizer(head, add_special_tokens=False)["input_ids"]]
        target = tokenizer(question, add_special_tokens=False)["input_ids"]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute == "bfloat16"):
            logits = model(input_ids=torch.tensor([prefix + target])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(np.mean([logprobs[len(prefix) - 1 + i, token].item() for i, token in enumerate(target)]))

    with_context = render_prompt(context, question).split(question)[0]
    alone = render_prompt("", question).split(question)[0]
    return mean_logprob(with_context) - mean_logprob(alone)


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])  # AVX2 CPUs compute float32; AVX512-BF16/AMX bf16
def test_lift_is_the_question_log_probability_gain(tiny_gemma_path, compute):
    """The LM head runs on the question's positions only (logits_to_keep): the value must equal the one from
    the whole sequence's logits, with the prompt template's own text before the question, in either compute
    dtype (bf16: autocast over the float32 weights, evaluate's numerics)."""
    model, tokenizer = load_model(tiny_gemma_path, dtype="float32").eval(), load_tokenizer(tiny_gemma_path)
    question = "How do I let an option be given several times?"
    found = context_lift(model, tokenizer, CHUNKS[0]["text"], question, compute)
    expected = _full_sequence_lift(model, tokenizer, CHUNKS[0]["text"], question, compute)
    assert found == pytest.approx(expected, abs=1e-4 if compute == "float32" else 2e-2)
    other = context_lift(model, tokenizer, CHUNKS[1]["text"], question, compute)
    assert other != pytest.approx(found, abs=1e-6)  # the context is really read
    with pytest.raises(ValueError, match="empty"):
        context_lift(model, tokenizer, CHUNKS[0]["text"], "   ")


def test_lifts_fit_the_context_to_the_prompt_budget(tiny_gemma_path):
    """A context longer than the budget is cut as the assistant cuts it (fit_context), so a tiny budget
    gives the lift of a shorter context, and two items give two values in order."""
    model, tokenizer = load_model(tiny_gemma_path, dtype="float32").eval(), load_tokenizer(tiny_gemma_path)
    question = "How do I let an option be given several times?"
    long_texts = [CHUNKS[0]["text"] * 8]
    done = []
    values = lifts(model, tokenizer, [(question, long_texts), (question, [CHUNKS[1]["text"]])], budget=60,
                   progress=done.append)
    assert done == [1, 2] and len(values) == 2
    from kaggle_qa.prompting import fit_context

    fitted = fit_context(tokenizer, long_texts, question, 60)
    assert len(fitted) < len(long_texts[0])
    assert values[0] == pytest.approx(context_lift(model, tokenizer, fitted, question), abs=1e-6)


@pytest.mark.slow
def test_the_real_model_lifts_a_question_its_passage_answers(embedded_gemma_path):
    """Gemma 3 270M: the passage a question is about raises its log-probability; a passage about something
    else, or one that only shares the topic's words, raises it less."""
    model, tokenizer = load_model(embedded_gemma_path, dtype="float32").eval(), load_tokenizer(embedded_gemma_path)
    question = "How do I let an option be given several times and keep all the values?"
    answering = context_lift(model, tokenizer, CHUNKS[0]["text"], question)
    unrelated = context_lift(model, tokenizer, "The Moon is about 384,400 km from the Earth on average.", question)
    assert answering > 0.3 and answering > unrelated + 0.5


def test_refusal_reason_checks_lift_last():
    covered = Retrieval([], 0.8, [])
    assert refusal_reason(covered, 0.35, 0, lift=0.2, min_lift=0.5) == "lift 0.200 < 0.500"
    assert refusal_reason(covered, 0.35, 0, lift=0.9, min_lift=0.5) is None
    assert refusal_reason(covered, 0.35, 0, lift=0.2, min_lift=None) is None  # no threshold: no check
    assert refusal_reason(covered, 0.35, 0, lift=None, min_lift=0.5) is None  # not scored (a backend)
    assert refusal_reason(Retrieval([], 0.2, []), 0.35, 0, lift=0.1, min_lift=0.5).startswith("relevance")


def test_without_the_lift_the_relevance_threshold_calibrated_alone_is_used():
    """An assistant that cannot check the lift (a backend generates) must not use a relevance threshold that
    was chosen to leave far questions to the lift."""
    from kaggle_qa.retrieval import relevance_threshold

    metrics = {"relevance": {"chosen": {"threshold": -0.43, "lift_threshold": 0.9},
                             "without_lift": {"threshold": 0.44}}}
    assert relevance_threshold({}, metrics) == -0.43
    assert relevance_threshold({}, metrics, with_lift=False) == 0.44
    assert relevance_threshold({"relevance_threshold": 0.3}, metrics, with_lift=False) == 0.3  # an override wins
    no_lift = {"relevance": {"chosen": {"threshold": 0.5, "lift_threshold": None}, "without_lift": {"threshold": 0.44}}}
    assert relevance_threshold({}, no_lift, with_lift=False) == 0.5


def test_lift_threshold_in_use():
    metrics = {"relevance": {"chosen": {"threshold": 0.4, "lift_threshold": 0.9}}}
    assert lift_threshold({"lift_threshold": None}, metrics) == 0.9
    assert lift_threshold({"lift_threshold": 1.5}, metrics) == 1.5  # an explicit override wins
    assert lift_threshold({}, {"relevance": {"chosen": {"threshold": 0.4, "lift_threshold": None}}}) is None
    assert lift_threshold({}, None) is None


def test_calibration_uses_lift_where_relevance_cannot_separate():
    """Near-domain questions as relevant as in-domain ones, but with a lower lift: the pair of thresholds
    refuses them and keeps the in-domain ones; with lift no better than chance, no lift threshold is chosen."""
    rng = np.random.default_rng(0)
    in_rel, near_rel, far_rel = rng.uniform(0.5, 0.8, 40), rng.uniform(0.5, 0.8, 20), rng.uniform(0.1, 0.3, 20)
    in_lift, near_lift, far_lift = rng.uniform(1.2, 3.0, 40), rng.uniform(0.0, 1.0, 20), rng.uniform(-2, 0, 20)
    only_relevance = calibrate_threshold(in_rel, {"near": near_rel, "far": far_rel})
    both = calibrate_with_lift(in_rel, in_lift, {"near": near_rel, "far": far_rel},
                               {"near": near_lift, "far": far_lift})
    assert 1.0 <= both["lift_threshold"] <= 1.2
    assert both["in_domain_answered"] == 1.0 and both["balanced_accuracy"] == 1.0
    assert only_relevance["balanced_accuracy"] < 0.9
    useless = calibrate_with_lift(in_rel, np.ones(40), {"near": near_rel, "far": far_rel},
                                  {"near": np.ones(20), "far": np.ones(20)})
    assert useless["lift_threshold"] is None and useless["threshold"] == pytest.approx(only_relevance["threshold"])
    floored = calibrate_with_lift(in_rel, in_lift, {"near": near_rel, "far": far_rel},
                                  {"near": near_lift, "far": far_lift}, min_answered=0.8)
    assert floored["in_domain_answered"] >= 0.8


def test_calibrate_refusal_reports_lift_on_the_disjoint_part():
    in_domain = [(f"in-domain question {i}?", 0.7) for i in range(40)]
    off_topic = [(f"near question {i}?", "near", 0.7) for i in range(20)] + \
                [(f"far question {i}?", "far", 0.1) for i in range(20)]
    lift = {q: 2.0 for q, _ in in_domain} | {q: 0.2 for q, _, _ in off_topic}
    chosen = calibrate_refusal(in_domain, off_topic, 0.5, lift=lift)
    assert chosen["lift_scored"] and 0.2 < chosen["lift_threshold"] < 2.0
    reported = chosen["reported"]
    assert reported["in_domain_answered"] == 1.0 and reported["near_refused"] == 1.0 and reported["far_refused"] == 1.0
    assert reported["in_domain_questions"] == sum(not calibration_side(q, 0.5) for q, _ in in_domain)
    without = calibrate_refusal(in_domain, off_topic, 0.5)
    assert without["lift_threshold"] is None and without["reported"]["near_refused"] == 0.0
    with pytest.raises(ValueError, match="no lift for 1 calibration question"):
        calibrate_refusal(in_domain, off_topic, 0.5, lift={q: v for q, v in lift.items() if q != "far question 3?"})


@pytest.fixture(scope="module")
def lift_index():
    return build_index(CHUNKS)


def test_the_assistant_refuses_below_the_lift_threshold(tiny_gemma_path, lift_index):
    model, tokenizer = load_model(tiny_gemma_path, dtype="float32"), load_tokenizer(tiny_gemma_path)
    question = "How do I let an option be given several times?"

    def assistant(threshold):
        return Assistant(model, tokenizer, Retriever(lift_index), method="bm25", top_k=1, relevance_threshold=0.0,
                         max_new_tokens=4, max_length=256, lift_threshold=threshold)

    measured = assistant(None)
    lift = measured.context_lift(question, measured.retriever.retrieve(question, 1, "bm25").hits)
    assert measured.ask(question).lift is None  # no threshold: not computed
    measured.close()
    high = assistant(lift + 0.01)
    refused = high.ask(question)
    high.close()
    assert not refused.covered and refused.citations == [] and refused.lift == pytest.approx(lift)
    low = assistant(lift - 0.01)
    answered = low.ask(question)
    low.close()
    assert answered.covered and answered.lift == pytest.approx(lift) and answered.citations
