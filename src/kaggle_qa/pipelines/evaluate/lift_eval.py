"""Lift scores for every question the refusal is calibrated on or judged with (:mod:`kaggle_qa.context_lift`).

One node, :func:`score_question_lift`: the fine-tuned model (the model ``kaggle-qa ask`` serves)
scores each question against the context the assistant would retrieve and fit for it: the in-domain
calibration questions (:func:`retrieval_eval.in_domain_questions`), the off-topic ones and every user
question. ``evaluate_retrieval`` calibrates the lift threshold on them with the relevance
threshold; ``evaluate_user_questions`` applies the chosen pair to the reported user questions, the same
refusal for the base and the fine-tuned column. ``refusal_calibration.lift: false`` turns it off
(no scores: the relevance threshold alone is calibrated, and the assistant checks no lift).
"""

from __future__ import annotations

import logging
import time

from kaggle_qa.numerics import packed_linears, packing_dtype
from kaggle_qa.context_lift import lifts
from kaggle_qa.user_questions import as_qa_rows

from .nodes import _LOCK, shared_fine_tuned_model, shared_retriever, shared_tokenizer
from .retrieval_eval import in_domain_questions, off_topic_rows

logger = logging.getLogger(__name__)


def lift_questions(test_set: list[dict], off_topic_questions: list, user_questions: list[dict] | None,
                   user_params: dict | None) -> list[str]:
    """Every question whose lift the evaluation reads, once each, in a fixed order."""
    in_domain, _ = in_domain_questions(test_set, user_questions, user_params)
    off_topic = [row["question"] for row in off_topic_rows(off_topic_questions)]
    users = [row["instruction"] for row in as_qa_rows(user_questions or [])]
    return list(dict.fromkeys(in_domain + off_topic + users))


def score_question_lift(base_model: str, adapter: str, settings: dict, retrieval_index: dict, test_set: list[dict],
                        off_topic_questions: list, user_questions: list[dict] | None, retrieval: dict,
                        user_params: dict, calibration: dict) -> dict:
    """``question_lift``: {"model", "adapter", "compute_dtype", "budget", "scores": {question: lift}}."""
    if not (calibration or {}).get("lift", True):
        logger.info("Lift scoring off (refusal_calibration.lift: false): relevance alone decides refusals")
        return {"scores": {}, "skipped": "refusal_calibration.lift is false"}
    questions = lift_questions(test_set, off_topic_questions, user_questions, user_params)
    retriever = shared_retriever(retrieval_index, retrieval["rrf_k"], retrieval["batch_size"])
    tokenizer = shared_tokenizer(base_model)
    model = shared_fine_tuned_model(base_model, adapter, settings)
    budget = settings["max_length"] - settings["max_new_tokens"]  # the assistant's prompt budget
    contexts = [[hit["text"] for hit in result.hits] for result in
                (retriever.retrieve(question, retrieval["top_k"], retrieval["method"]) for question in questions)]
    started = time.perf_counter()

    def progress(done: int) -> None:
        if done % 25 == 0 or done == len(questions):
            logger.info("Lift of %d/%d questions (%.0f s)", done, len(questions), time.perf_counter() - started)

    with _LOCK, packed_linears(model, packing_dtype(model, settings["compute_dtype"])):
        values = lifts(model, tokenizer, zip(questions, contexts), budget, settings["compute_dtype"], progress)
    return {"model": "fine-tuned", "adapter": str(adapter), "compute_dtype": settings["compute_dtype"],
            "budget": budget, "seconds": round(time.perf_counter() - started, 1),
            "scores": {question: round(value, 6) for question, value in zip(questions, values)}}
