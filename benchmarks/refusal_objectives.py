"""Which objective chooses the refusal threshold: the measurement behind
``refusal_calibration.min_in_domain_answered`` (docs/evaluate.md, "Refusal calibration").

    .venv/bin/python benchmarks/refusal_objectives.py --env click \
        --out benchmarks/results/refusal_objectives/click.json

Reads the env's latest ``retrieval_index``, ``qa_v2``, ``off_topic_questions`` and
``user_questions`` through the catalog and scores every question as ``evaluate_retrieval`` does
(best dense cosine; a question the unknown-term rule refuses scores -1). For each objective it
chooses the threshold on the calibration part (the same hash split) and reports, on the disjoint
part, the in-domain answered and near / far refused rates, plus the share of *all* the user's
questions (selection and reported parts; what the assistant is really asked) that would be
answered. Objectives: off-topic pooled into one class; in-domain, near and far as three classes;
three classes with a floor on the in-domain answered rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FLOORS = (0.0, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from kaggle_qa.pipelines.evaluate.retrieval_eval import (
        OFF_TOPIC_KINDS, REFUSED_BY_TERMS, calibrate_threshold, calibration_side, off_topic_rows)
    from kaggle_qa.qa_schema import OPEN_TASKS, infer_task_type
    from kaggle_qa.retrieval import Retriever
    from kaggle_qa.user_questions import selection_rows

    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        index, test_set = catalog.load("retrieval_index"), catalog.load("qa_v2")
        off_topic = off_topic_rows(catalog.load("off_topic_questions"))
        users = catalog.load("user_questions") if catalog.exists("user_questions") else []
    retrieval, fraction = params["retrieval"], params["refusal_calibration"]["calibration_fraction"]
    retriever = Retriever(index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])

    def relevance(questions: list[str]) -> np.ndarray:
        limit = retrieval.get("max_unknown_terms")
        return np.array([REFUSED_BY_TERMS if limit is not None and len(retriever.unknown_terms(q)) > limit
                         else float(s["dense"].max()) for q, s in zip(questions, retriever.scores(questions))])

    in_questions = [row["instruction"] for row in test_set if infer_task_type(row) in OPEN_TASKS]
    in_questions += [row["question"] for row in selection_rows(users, params.get("user_questions"))] if users else []
    in_scores = relevance(in_questions)
    off_scores = relevance([row["question"] for row in off_topic])
    user_scores = relevance([row["question"] for row in users]) if users else np.array([])
    in_side = np.array([calibration_side(q, fraction) for q in in_questions])
    off_side = np.array([calibration_side(row["question"], fraction) for row in off_topic])
    kinds = np.array([row["kind"] for row in off_topic])

    def part(calibration: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return (in_scores[in_side == calibration],
                {kind: off_scores[(off_side == calibration) & (kinds == kind)] for kind in OFF_TOPIC_KINDS})

    def rates(threshold: float) -> dict:
        inside, outside = part(False)
        result = {"in_domain_answered": float(np.mean(inside >= threshold)), "in_domain_questions": int(len(inside))}
        for kind, scores in outside.items():
            result[f"{kind}_refused"] = float(np.mean(scores < threshold)) if len(scores) else None
            result[f"{kind}_questions"] = int(len(scores))
        if len(user_scores):
            result["user_questions_answered"] = float(np.mean(user_scores >= threshold))
            result["user_questions"] = int(len(user_scores))
        return result

    inside, outside = part(True)
    objectives = {"off-topic pooled": calibrate_threshold(inside, np.concatenate(list(outside.values())))}
    for floor in FLOORS:
        name = "three classes" + (f", in-domain answered >= {floor:.0%}" if floor else "")
        objectives[name] = calibrate_threshold(inside, outside, floor)
    result = {
        "env": args.env or "base",
        "calibration_fraction": fraction,
        "calibration_part": {"in_domain": int(len(inside)), **{k: int(len(v)) for k, v in outside.items()}},
        "objectives": {name: {"threshold": chosen["threshold"], "reported": rates(chosen["threshold"])}
                       for name, chosen in objectives.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, entry in result["objectives"].items():
        print(f"{name:45s} threshold {entry['threshold']:.3f}  {entry['reported']}")


if __name__ == "__main__":
    main()
