"""What the assistant needs from a Kedro project: base model, adapter, index and parameters."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from kaggle_qa.domain import Domain
from kaggle_qa.modeling import read_training_params


@dataclass
class AssistantInputs:
    base_model: str
    adapter: str | None
    retrieval_index: dict
    retrieval: dict
    assistant: dict
    domain: Domain | None = None  # the `domain` parameters: the refusal and greeting name its docs
    retrieval_metrics: dict | None = None  # the evaluation's latest: the refusal threshold calibrated on this site
    training_params: dict | None = None  # the latest adapter's (also with --base-only): max_length, answer lengths


def logs_to_stderr() -> None:
    """Send log records to stderr, so stdout carries only answers (`kaggle-qa ask --json | jq`).

    Kedro's logging configuration writes to stdout through a rich handler.
    """
    for handler in logging.getLogger().handlers:
        if hasattr(handler, "console"):  # rich.logging.RichHandler
            from rich.console import Console

            handler.console = Console(stderr=True)
        elif isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def load_inputs(project_path: str | Path = ".", env: str | None = None, use_adapter: bool = True,
                conf_source: str | None = None) -> AssistantInputs:
    """Read ``base_model``, the latest ``adapter``, ``retrieval_index`` and the parameters via the catalog
    (``conf_source``: a configuration folder other than the project's ``conf/``, as ``kedro run --conf-source``)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env, conf_source=conf_source) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        latest_adapter = catalog.load("adapter") if catalog.exists("adapter") else None
        return AssistantInputs(
            base_model=catalog.load("base_model"),
            adapter=catalog.load("adapter") if use_adapter else None,
            retrieval_index=catalog.load("retrieval_index"),
            retrieval=params["retrieval"],
            assistant=params["assistant"],
            domain=Domain.from_params(params) if "domain" in params else None,
            retrieval_metrics=catalog.load("retrieval_metrics") if catalog.exists("retrieval_metrics") else None,
            training_params=read_training_params(latest_adapter) if latest_adapter else None,
        )
