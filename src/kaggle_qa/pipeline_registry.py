"""Project pipelines: ingestion → synthesis → train → evaluate."""

from kedro.pipeline import Pipeline

from kaggle_qa.pipelines import evaluate, ingestion, synthesis, train


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "ingestion": ingestion.create_pipeline(),
        "synthesis": synthesis.create_pipeline(),
        "train": train.create_pipeline(),
        "evaluate": evaluate.create_pipeline(assistant_sections=True) + evaluate.create_assistant_evaluation_pipeline(),
        "assistant_eval": evaluate.create_assistant_evaluation_pipeline(),
    }
    sweep = getattr(train, "create_sweep_pipeline", None)
    if sweep is not None:
        pipelines["sweep"] = sweep()
    pipelines["__default__"] = (
        pipelines["ingestion"] + pipelines["synthesis"] + pipelines["train"] + pipelines["evaluate"]
    )
    return pipelines
