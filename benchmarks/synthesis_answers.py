"""What the synthesis nodes write from an environment's ``doc_chunks``: rows per version and the
shape of the open answers (how many carry a code block or list, how long they are).

Runs the synthesis pipeline's own nodes (split → teacher → filters) on the latest ``doc_chunks``
of the environment, without saving anything, so two commits can be compared on the same chunks:

    .venv/bin/python benchmarks/synthesis_answers.py --env click --out /tmp/after.json
    git worktree add /tmp/before <commit> && ln -s "$PWD/data" /tmp/before/data
    (cd /tmp/before && /work/main/.venv/bin/python /work/main/benchmarks/synthesis_answers.py --env click --out /tmp/before.json)

The project whose code runs is the current directory's (``bootstrap_project`` puts its ``src``
first on the path).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def open_answer_stats(rows: list[dict]) -> dict:
    from kaggle_qa.text import split_sentences

    answers = [row["output"] for row in rows if row["task_type"] == "extractive_qa"]
    words = sorted(len(answer.split()) for answer in answers)
    return {
        "rows": len(rows),
        "open_answers": len(answers),
        "with_code_block": sum("```" in answer for answer in answers),
        "with_list_or_several_lines": sum("\n" in answer for answer in answers),
        "several_sentences": sum(len(split_sentences(answer.replace("\n", " "))) > 1 for answer in answers),
        "ending_with_colon": sum(answer.rstrip().endswith(":") for answer in answers),
        "words_mean": round(statistics.mean(words), 1) if words else None,
        "words_p95": words[int(0.95 * (len(words) - 1))] if words else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = Path.cwd()
    bootstrap_project(root)
    from kaggle_qa.pipelines.synthesis.nodes import filter_candidates, generate_candidates, split_chunks

    with KedroSession.create(project_path=root, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        chunks = catalog.load("doc_chunks")
        synthesis = params["synthesis"]
        split = split_chunks(chunks, synthesis)
        candidates, _ = generate_candidates(chunks, split, catalog.load("teacher_prompts"), None, synthesis, params.get("domain"))
        v1, v2, v3, quarantine, _ = filter_candidates(candidates, chunks, synthesis)
    result = {
        "env": args.env or "base",
        "chunks": len(chunks),
        "answer_scope": synthesis.get("offline", {}).get("answer_scope", "sentence"),
        "versions": {name: open_answer_stats(rows) for name, rows in (("v1", v1), ("v2", v2), ("v3", v3))},
        "quarantined": len(quarantine),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
