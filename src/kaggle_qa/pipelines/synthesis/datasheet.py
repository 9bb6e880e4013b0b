"""The datasheet: the paper's Tables 1 and 5 for our versions, filters, overlap, samples."""

from __future__ import annotations

import random
from collections import Counter
from statistics import mean

from matplotlib.figure import Figure

from kaggle_qa.domain import Domain, fill
from kaggle_qa.qa_schema import TASK_TYPES, count_task_types

from .audit import audit_markdown
from .filters import test_set_leak
from .near_duplicates import RougeIndex

TASK_NAMES = {"yes_no": "Yes-No QA", "true_false": "True-False QA", "extractive_qa": "Extractive QA", "nli": "NLI"}
USED_FOR = {"v1": "Initial model setup", "v2": "Test and validation set", "v3": "Training set"}


def _words(text: str) -> int:
    return len(text.split())


def table1(rows: list[dict], input_optional: bool) -> dict:
    """Table 1's column for one version."""
    non_empty = [row for row in rows if row["input"].strip()]
    average = lambda values: round(mean(values), 2) if values else 0.0  # noqa: E731
    return {
        "input_field_optional": input_optional,
        "instances": len(rows),
        "empty_inputs": len(rows) - len(non_empty),
        "avg_instruction_words": average([_words(r["instruction"]) for r in rows]),
        "avg_nonempty_input_words": average([_words(r["input"]) for r in non_empty]),
        "avg_output_words": average([_words(r["output"]) for r in rows]),
        **{f"n_{task}": n for task, n in count_task_types(rows).items()},
    }


def overlap(test: list[dict], train: list[dict], filters: dict) -> dict:
    """How much the training set (v3) repeats of the test set (v2)."""
    normalise = lambda text: " ".join(text.lower().split())  # noqa: E731
    test_questions = {normalise(r["instruction"]) for r in test}
    index = RougeIndex(filters["max_question_rouge_l"])
    for row in test:
        index.add(row["instruction"], payload=row["input"])
    near = [(r["instruction"], index.matches(r["instruction"])) for r in train]
    near = [(question, found[0][1]) for question, found in near if found]
    shared_chunks = {r.get("chunk_id") for r in test} & {r.get("chunk_id") for r in train} - {None}
    return {
        "identical_questions": sum(normalise(r["instruction"]) in test_questions for r in train),
        "near_identical_questions": len(near),
        "near_identical_threshold_rouge_l": filters["max_question_rouge_l"],
        "near_identical_about_the_same_text": sum(bool(test_set_leak(r, index, filters)) for r in train),
        "near_identical_examples": near[:5],
        "shared_chunks": len(shared_chunks),
    }


def samples(rows: list[dict], per_task: int, seed: int) -> dict[str, list[dict]]:
    """`per_task` seeded random rows of each task type, so a reader can judge them."""
    rng = random.Random(seed)
    picked = {}
    for task in TASK_TYPES:
        of_task = [r for r in rows if r.get("task_type") == task]
        picked[task] = rng.sample(of_task, min(per_task, len(of_task)))
    return picked


def datasheet_record(
    versions: dict,
    filter_report: dict,
    teacher_report: dict,
    chunk_split: dict,
    synthesis: dict,
    domain: Domain | None = None,
) -> dict:
    """Everything the datasheet says, as JSON; Table 5's texts filled from the domain
    (``{docs_url}``, ``{licence}``, ``{docs_title}``, …)."""
    sheet = {k: fill(v, domain) if domain and isinstance(v, str) else v for k, v in synthesis["datasheet"].items()}
    return {
        "title": f"{domain.name} docs QA (synthesized)" if domain else "Docs QA (synthesized)",
        "table1": {
            v: table1(rows, synthesis["versions"][v]["input_mode"] == "optional") for v, rows in versions.items()
        },
        "table5": {
            "data_source": sheet["data_source"],
            "scrape_date": sheet["scrape_date"],
            "scraping_tool": sheet["scraping_tool"],
            "licence": sheet["licence"],
            "format": sheet["format"],
            "purpose": sheet["purpose"],
            "created_by": sheet["created_by"],
            "generator": teacher_report["teacher"]
            if teacher_report["teacher"] == "offline"
            else f"{teacher_report['model']} at {teacher_report['base_url']}",
        },
        "teacher": teacher_report,
        "filters": filter_report,
        "chunks": {
            "test": len(chunk_split["test"]),
            "train": len(chunk_split["train"]),
            "test_kept_out_of_train": synthesis["keep_test_chunks_out_of_train"],
            "repeated_chunk_ids_dropped": chunk_split.get("repeated_chunk_ids", 0),
            "unusable": dict(Counter(chunk_split.get("unusable", {}).values())),
        },
        "v2_v3_overlap": overlap(versions["v2"], versions["v3"], synthesis["filters"]),
        "samples_v3": samples(versions["v3"], sheet["sample_rows_per_task"], synthesis["seed"]),
    }


def datasheet_figure(versions: dict[str, list[dict]]) -> Figure:
    """Task types per version, and the spread of output lengths (words) per version."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    bars, lengths = figure.subplots(1, 2)
    width = 0.8 / len(versions)
    for i, (version, rows) in enumerate(versions.items()):
        counts = count_task_types(rows)
        bars.bar([t + i * width for t in range(len(TASK_TYPES))], [counts[t] for t in TASK_TYPES], width, label=version)
        lengths.hist([_words(r["output"]) for r in rows], bins=range(0, 61, 2), histtype="step", label=version)
    bars.set_xticks([t + 0.4 - width / 2 for t in range(len(TASK_TYPES))], [TASK_NAMES[t] for t in TASK_TYPES])
    bars.set(title="Rows per task type", ylabel="rows")
    lengths.set(title="Output length", xlabel="words (60+ not shown)", ylabel="rows")
    for axes in (bars, lengths):
        axes.legend()
    return figure


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def datasheet_markdown(record: dict) -> str:
    """The datasheet as markdown."""
    t1 = record["table1"]
    versions = list(t1)
    rows = [
        ("Input field optional", lambda c: "Yes" if c["input_field_optional"] else "No"),
        ("# of instances", lambda c: c["instances"]),
        ("# of instances with empty inputs", lambda c: c["empty_inputs"]),
        ("ave. instruction length (words)", lambda c: c["avg_instruction_words"]),
        ("ave. non-empty input length (words)", lambda c: c["avg_nonempty_input_words"]),
        ("ave. output length (words)", lambda c: c["avg_output_words"]),
        *[(TASK_NAMES[t], lambda c, t=t: c[f"n_{t}"]) for t in TASK_TYPES],
    ]
    lines = [f"# Datasheet: {record.get('title', 'Docs QA (synthesized)')}", "", "## Table 1: datasets", ""]
    lines += ["| | " + " | ".join(f"qa_{v}" for v in versions) + " |", "|---" * (len(versions) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(get(t1[v])) for v in versions) + " |" for name, get in rows]
    lines += ["| Used for | " + " | ".join(USED_FOR.get(v, "") for v in versions) + " |", ""]
    if "shortcut_audit" in record:
        lines += audit_markdown(record["shortcut_audit"])
    lines += ["## Table 5: datasheet", "", "| | |", "|---|---|"]
    lines += [
        f"| {key.replace('_', ' ').capitalize()} | {_cell(str(value))} |" for key, value in record["table5"].items()
    ]
    lines += ["", "## Teacher", ""]
    lines += [f"- {key}: {value}" for key, value in record["teacher"].items()]
    lines += ["", "## Filters (dropped rows are in qa_quarantine, each with its reason)", ""]
    for version, counts in record["filters"].items():
        dropped = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts["dropped"].items())) or "none"
        lines.append(f"- {version}: {counts['kept']} kept of {counts['candidates']} candidates; dropped: {dropped}")
    chunks, ov = record["chunks"], record["v2_v3_overlap"]
    lines += ["", "## v2 (test) / v3 (train) overlap", ""]
    threshold = ov["near_identical_threshold_rouge_l"]
    lines += [
        f"- chunks: {chunks['test']} for v2, {chunks['train']} for v3; "
        f"v2 chunks kept out of v3: {chunks['test_kept_out_of_train']}",
        f"- repeated chunk ids dropped before the split: {chunks.get('repeated_chunk_ids_dropped', 0)}; chunks "
        f"that give no row (in qa_quarantine): {chunks.get('unusable') or 'none'}",
        f"- chunks shared by v2 and v3 rows: {ov['shared_chunks']}",
        f"- v3 questions identical to a v2 question: {ov['identical_questions']}",
        f"- v3 questions near-identical (ROUGE-L > {threshold}) to a v2 question: {ov['near_identical_questions']}, "
        f"of which about the same text (answer supported by the v2 context): "
        f"{ov['near_identical_about_the_same_text']}",
        *[f"  - e.g. {_cell(q, 120)} ~ {_cell(t, 120)}" for q, t in ov["near_identical_examples"]],
    ]
    lines += ["", "## Sample rows of qa_v3 (seeded, per task type)", ""]
    for task, picked in record["samples_v3"].items():
        lines += [
            f"### {TASK_NAMES[task]} ({len(picked)})",
            "",
            "| instruction | output | label / edit |",
            "|---|---|---|",
        ]
        lines += [
            f"| {_cell(r['instruction'])} | {_cell(r['output'])} | {r.get('label', '')} {r.get('edit', '')} |"
            for r in picked
        ]
        lines.append("")
    return "\n".join(lines)
