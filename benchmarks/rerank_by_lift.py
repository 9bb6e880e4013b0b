"""Would reranking the retrieved chunks by their context lift put the answering chunk first?

    .venv/bin/python benchmarks/rerank_by_lift.py --env click \
        --out benchmarks/results/rerank_by_lift/click.json

The fine-tuned model often copies a passage from the wrong one of its three chunks. Query
likelihood reranks passages (Sachan et al., 2022, UPR): here each of the top ``--k`` chunks by
``retrieval.method`` is scored alone by the fine-tuned model's context lift
(:func:`kaggle_qa.context_lift.context_lift`, the chunk's first 1,500 characters as context), and
the hit rate at 1 of the retrieval order and of the lift order are compared, on the user's own
questions (the expected page) and on a seeded sample of the test set's open questions (the chunk
each was written from). Reads the env's latest adapter, ``retrieval_index``, ``qa_v2`` and
``user_questions`` through the catalog. Measurement only: the product does not rerank.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None)
    parser.add_argument("--k", type=int, default=5, help="chunks reranked (default 5)")
    parser.add_argument("--test-questions", type=int, default=60, help="seeded sample of qa_v2 open questions")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from kaggle_qa.assistant.core import load_answer_model
    from kaggle_qa.context_lift import context_lift
    from kaggle_qa.modeling import load_tokenizer, resolve_dtype
    from kaggle_qa.numerics import packed_linears, packing_dtype
    from kaggle_qa.pipelines.evaluate.user_eval import page_key
    from kaggle_qa.qa_schema import OPEN_TASKS, infer_task_type
    from kaggle_qa.retrieval import Retriever

    root = Path(__file__).resolve().parents[1]
    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        base_model, adapter = catalog.load("base_model"), catalog.load("adapter")
        index, test_set = catalog.load("retrieval_index"), catalog.load("qa_v2")
        users = catalog.load("user_questions") or []
    method = params["retrieval"]["method"]
    retriever = Retriever(index)
    tokenizer, compute = load_tokenizer(base_model), resolve_dtype("auto")
    model = load_answer_model(base_model, adapter, "auto")
    rows = [row for row in test_set if infer_task_type(row) in OPEN_TASKS and row.get("chunk_id")]
    rows = random.Random(0).sample(rows, min(args.test_questions, len(rows)))

    def orders(question: str) -> tuple[list[dict], list[dict]]:
        hits = retriever.retrieve(question, args.k, method).hits
        lifts = [context_lift(model, tokenizer, hit["text"][:1500], question, compute) for hit in hits]
        return hits, [hits[i] for i in np.argsort(-np.array(lifts), kind="stable")]

    result = {"env": args.env, "method": method, "k": args.k, "adapter": str(adapter), "sets": {}}
    with packed_linears(model, packing_dtype(model, compute)):
        found = {"retrieval": [], "lift": []}
        for row in users:
            retrieved, reranked = orders(row["question"])
            found["retrieval"].append(page_key(retrieved[0]["url"]) == page_key(row["url"]))
            found["lift"].append(page_key(reranked[0]["url"]) == page_key(row["url"]))
        if users:
            result["sets"]["user questions (expected page)"] = {"n": len(users), **{
                f"hit@1 {name}": float(np.mean(values)) for name, values in found.items()}}
        found = {"retrieval": [], "lift": []}
        for row in rows:
            retrieved, reranked = orders(row["instruction"])
            found["retrieval"].append(retrieved[0]["chunk_id"] == row["chunk_id"])
            found["lift"].append(reranked[0]["chunk_id"] == row["chunk_id"])
        result["sets"]["test questions (source chunk)"] = {"n": len(rows), **{
            f"hit@1 {name}": float(np.mean(values)) for name, values in found.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["sets"], indent=2))


if __name__ == "__main__":
    main()
