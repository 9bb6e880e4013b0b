"""The evaluate pipeline: base vs fine-tuned answers on the test set, metrics, report.

Inputs: ``base_model`` and ``adapter`` (train pipeline), ``qa_v2`` (the synthesized test
set; point ``qa_v2`` at another file in a ``conf/<env>/catalog_evaluate.yml`` to evaluate
on it). Outputs: ``predictions`` (JSON lines), ``metrics`` (JSON), ``eval_report``
(markdown with the chart embedded) and ``eval_chart`` (PNG), all versioned.
:func:`create_assistant_evaluation_pipeline` adds two nodes that write ``retrieval_metrics``/``retrieval_table`` (is the gold chunk retrieved, per method; the
relevance threshold) and ``context_modes_metrics``/``context_modes_table`` (gold / retrieved /
no context, base vs fine-tuned).
"""

from kedro.pipeline import Pipeline, node

from .nodes import build_report, generate_answers, prepare_test_set, score_predictions, summarize_metrics
from .modes import evaluate_context_modes
from .retrieval_eval import evaluate_retrieval


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(prepare_test_set, ["qa_v2", "params:evaluate"], "eval_test_set", name="prepare_test_set"),
            node(
                generate_answers,
                ["base_model", "adapter", "eval_test_set", "params:evaluate"],
                "eval_generations",
                name="generate_answers",
            ),
            node(
                score_predictions,
                ["eval_test_set", "eval_generations", "params:evaluate"],
                "predictions",
                name="score_predictions",
            ),
            node(
                summarize_metrics,
                ["predictions", "eval_generations", "params:evaluate"],
                "metrics",
                name="summarize_metrics",
            ),
            node(
                build_report,
                ["metrics", "predictions", "params:evaluate"],
                ["eval_report", "eval_chart"],
                name="build_report",
            ),
        ]
    )


def create_assistant_evaluation_pipeline(**kwargs) -> Pipeline:
    """The assistant's evaluation: retrieval hit rate + relevance threshold, three context modes.

    Kept apart from :func:`create_pipeline` (whose inputs are a tested contract); the project
    registry runs both as the ``evaluate`` pipeline, and this one alone as ``assistant_eval``.
    """
    return Pipeline(
        [
            node(
                evaluate_retrieval,
                ["retrieval_index", "qa_v2", "off_topic_questions", "params:retrieval", "params:evaluate"],
                ["retrieval_metrics", "retrieval_table"],
                name="evaluate_retrieval",
            ),
            node(
                evaluate_context_modes,
                ["base_model", "adapter", "qa_v2", "retrieval_index", "params:retrieval", "params:evaluate",
                 "params:context_modes"],
                ["context_modes_metrics", "context_modes_table"],
                name="evaluate_context_modes",
            ),
        ]
    )
