"""The evaluate pipeline: base vs fine-tuned on two test sets, metrics with intervals, one report.

Test sets: ``qa_v2`` (ours, synthesized; point it at another file in a
``conf/<env>/catalog_evaluate.yml`` to evaluate on it) and ``qa_cross_teacher`` (the paper's
published v3, written by other teachers; a seeded sample of ``evaluate.cross_teacher.limit``
rows, 0 to skip). Per test set: ``read_adapter_settings`` → ``answer_base`` (reused from
``base_answers_cache`` when base model, test set and settings are unchanged) →
``answer_fine_tuned`` (``raw_answers``, saved before scoring) → ``score_predictions``
(``predictions``) → ``summarize_metrics`` (``metrics``). ``build_report`` writes
``eval_report`` and ``eval_chart`` from both.

:func:`create_assistant_evaluation_pipeline` (run within ``evaluate`` and alone as
``assistant_eval``) writes ``retrieval_metrics``/``retrieval_table`` (is the gold chunk
retrieved, per method; the refusal thresholds, relevance and the fine-tuned model's lift of each
question (``question_lift``), calibrated on one part of this site's questions and reported on the other), ``context_modes_metrics``/``context_modes_table`` (gold / retrieved / no
context over the whole test set, base vs fine-tuned; gold is the main evaluation's answers) and
``user_questions_metrics``/``user_questions_predictions``/``user_questions_table`` (the reported
part of the user's own question file in retrieved mode, base vs fine-tuned).
"""

from kedro.pipeline import Pipeline, node

from .nodes import (
    answer_base,
    answer_fine_tuned,
    prepare_test_set,
    read_adapter_settings,
    score_predictions,
    summarize_metrics,
)
from .modes import evaluate_context_modes
from .report import build_report
from .retrieval_eval import evaluate_retrieval
from .lift_eval import score_question_lift
from .user_eval import evaluate_user_questions

# dataset names per test set: (test set, its parameters, prefix of every output)
TEST_SETS = {
    "ours": ("qa_v2", "params:evaluate", ""),
    "cross_teacher": ("qa_cross_teacher", "params:evaluate.cross_teacher", "cross_teacher_"),
}


def _test_set_nodes(name: str) -> list:
    source, set_params, prefix = TEST_SETS[name]
    test_set, base, raw = f"{prefix}eval_test_set", f"{prefix}base_answers", f"{prefix}raw_answers"
    predictions, metrics = f"{prefix}predictions", f"{prefix}metrics"
    return [
        node(prepare_test_set, [source, set_params, "adapter"], test_set, name=f"{prefix}prepare_test_set"),
        node(
            answer_base,
            ["base_model", test_set, "eval_settings", "params:evaluate", f"{base}_cache"],
            base,
            name=f"{prefix}answer_base",
        ),
        node(
            answer_fine_tuned,
            ["base_model", "adapter", test_set, "eval_settings", "params:evaluate", base],
            raw,
            name=f"{prefix}answer_fine_tuned",
        ),
        node(score_predictions, [test_set, raw, "params:evaluate"], predictions, name=f"{prefix}score_predictions"),
        node(summarize_metrics, [test_set, predictions, raw, "params:evaluate"], metrics, name=f"{prefix}summarize_metrics"),
    ]


def create_pipeline(assistant_sections: bool = False, **kwargs) -> Pipeline:
    """Base vs fine-tuned on both test sets and the report; with `assistant_sections`, the report
    also holds the retrieval table, the three context modes and the user questions (outputs of
    :func:`create_assistant_evaluation_pipeline`, which must then run too)."""
    report_inputs = ["metrics", "predictions", "cross_teacher_metrics", "cross_teacher_predictions", "params:evaluate"]
    if assistant_sections:
        report_inputs += ["retrieval_table", "context_modes_table", "user_questions_table"]
    return Pipeline(
        [
            node(read_adapter_settings, ["base_model", "adapter", "params:evaluate"], "eval_settings",
                 name="read_adapter_settings"),
            *_test_set_nodes("ours"),
            *_test_set_nodes("cross_teacher"),
            node(build_report, report_inputs, ["eval_report", "eval_chart"], name="build_report"),
        ]
    )


def create_assistant_evaluation_pipeline(**kwargs) -> Pipeline:
    """The assistant's evaluation: retrieval hit rate + refusal calibration, three context modes, the
    user's questions in retrieved mode.

    Kept apart from :func:`create_pipeline` (whose inputs are a tested contract); the project
    registry runs both as the ``evaluate`` pipeline, and this one alone as ``assistant_eval``. It
    includes the nodes of our test set that its gold mode reuses (the same node objects as
    :func:`create_pipeline`'s, so the two pipelines add up without running anything twice).
    """
    upstream = create_pipeline().only_nodes("read_adapter_settings", "prepare_test_set", "answer_base",
                                            "answer_fine_tuned", "score_predictions")
    return upstream + Pipeline(
        [
            node(
                score_question_lift,
                ["base_model", "adapter", "eval_settings", "retrieval_index", "qa_v2", "off_topic_questions",
                 "user_questions", "params:retrieval", "params:user_questions", "params:refusal_calibration"],
                "question_lift",
                name="score_question_lift",
            ),
            node(
                evaluate_retrieval,
                ["retrieval_index", "qa_v2", "off_topic_questions", "params:retrieval", "params:evaluate",
                 "user_questions", "params:user_questions", "params:refusal_calibration", "question_lift"],
                ["retrieval_metrics", "retrieval_table"],
                name="evaluate_retrieval",
            ),
            node(
                evaluate_context_modes,
                ["base_model", "adapter", "eval_test_set", "raw_answers", "predictions", "retrieval_index",
                 "params:retrieval",
                 "params:evaluate", "params:context_modes", "context_modes_base_answers_cache"],
                ["context_modes_metrics", "context_modes_table", "context_modes_base_answers"],
                name="evaluate_context_modes",
            ),
            node(
                evaluate_user_questions,
                ["base_model", "adapter", "user_questions", "retrieval_index", "params:retrieval", "retrieval_metrics",
                 "params:evaluate", "params:user_questions", "params:domain", "user_questions_base_answers_cache",
                 "question_lift"],
                ["user_questions_metrics", "user_questions_predictions", "user_questions_table",
                 "user_questions_base_answers"],
                name="evaluate_user_questions",
            ),
        ]
    )
