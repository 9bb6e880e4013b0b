"""The train pipeline (qa_v3 → chunk-disjoint train/validation split → retrieved contexts for a share of
the open questions (train/contexts.py) → adapter, scaled to the strength chosen on answers written by
someone else (train/strength.py), train_metrics, learning_curves) and the Table 3 sweep. The test set (qa_v2) is never read here."""

from kedro.pipeline import Pipeline, node, pipeline

from .contexts import add_retrieved_contexts, user_selection_examples
from .strength import others_selection_examples
from .nodes import (
    build_examples,
    split_training_data,
    build_sweep_examples,
    build_sweep_table,
    plot_learning_curves,
    run_sweep_experiment,
    train_adapter,
)

# The paper's Table 3 experiments; their settings live in conf/*/parameters_sweep.yml.
TABLE3_EXPERIMENTS = tuple(f"exp_{number}" for number in range(1, 9))


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                split_training_data,
                ["qa_v3", "params:train"],
                ["train_rows", "validation_rows", "qa_heldout", "data_split"],
                name="split_training_data",
            ),
            node(
                add_retrieved_contexts,
                ["train_rows", "validation_rows", "retrieval_index", "base_model", "params:retrieval", "params:train"],
                ["train_rows_in_context", "validation_rows_in_context", "train_contexts_report"],
                name="add_retrieved_contexts",
            ),
            node(
                build_examples,
                ["train_rows_in_context", "validation_rows_in_context", "base_model", "params:train"],
                ["train_examples", "validation_examples", "train_data_report"],
                name="build_examples",
            ),
            node(
                user_selection_examples,
                ["user_questions", "retrieval_index", "base_model", "params:retrieval", "params:user_questions",
                 "params:train"],
                "user_selection_examples",
                name="user_selection_examples",
            ),
            node(
                others_selection_examples,
                ["qa_cross_teacher", "base_model", "params:train"],
                "others_selection_examples",
                name="others_selection_examples",
            ),
            node(
                train_adapter,
                ["train_examples", "validation_examples", "train_data_report", "data_split", "base_model",
                 "params:train", "user_selection_examples", "others_selection_examples"],
                ["adapter", "train_metrics"],
                name="train_adapter",
            ),
            node(plot_learning_curves, "train_metrics", "learning_curves", name="plot_learning_curves"),
        ]
    )


def experiment_runner(name: str):
    """A node function that trains the sweep experiment `name` (a named function, not a partial)."""

    def train_experiment(
        train_examples: list[dict], validation_examples: list[dict], base_model: str,
        train_params: dict, sweep_params: dict, experiment: dict,
    ) -> dict:
        """Train one Table 3 experiment and return its table row."""
        return run_sweep_experiment(
            train_examples, validation_examples, base_model, train_params, sweep_params, experiment, name
        )

    return train_experiment


def create_sweep_pipeline(experiments: tuple[str, ...] = TABLE3_EXPERIMENTS, **kwargs) -> Pipeline:
    """One namespace per experiment (sweep.exp_1 … sweep.exp_8), all feeding `sweep_table`."""
    prepare = Pipeline(
        [
            node(
                build_sweep_examples,
                ["qa_v3", "base_model", "params:train", "params:sweep"],
                ["sweep_train_examples", "sweep_validation_examples"],
                name="build_sweep_examples",
            )
        ]
    )
    runs = [
        pipeline(
            [
                node(
                    experiment_runner(name),
                    ["train_examples", "validation_examples", "base_model",
                     "params:train", "params:sweep", "params:experiment"],
                    "table_row",
                    name="train_experiment",
                )
            ],
            namespace=f"sweep.{name}",
            outputs={"table_row": f"sweep_{name}_row"},
            inputs={"train_examples": "sweep_train_examples",
                    "validation_examples": "sweep_validation_examples",
                    "base_model": "base_model"},
            parameters={"params:train": "params:train", "params:sweep": "params:sweep",
                        "params:experiment": f"params:sweep.experiments.{name}"},
        )
        for name in experiments
    ]
    table = Pipeline(
        [node(build_sweep_table, [f"sweep_{name}_row" for name in experiments], "sweep_table",
              name="build_sweep_table")]
    )
    return prepare + sum(runs, Pipeline([])) + table
