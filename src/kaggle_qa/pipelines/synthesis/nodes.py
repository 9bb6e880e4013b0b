"""Nodes of the synthesis pipeline: split chunks → teacher → filters → datasheet."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

from kaggle_qa.domain import Domain, fill_prompt
from kaggle_qa.retrieval import Retriever
from kaggle_qa.text import split_sentences

from .audit import open_answer_phrases, shortcut_audit
from .datasheet import datasheet_figure, datasheet_markdown, datasheet_record
from .filters import filter_rows, quarantined
from .near_duplicates import RougeIndex
from .round_trip import round_trip_filter
from .teachers.base import parse_reply
from .teachers.offline import OfflineTeacher
from .teachers.openai_teacher import OpenAITeacher

logger = logging.getLogger(__name__)

VERSIONS = ("v1", "v2", "v3")
CHUNK_KEYS = {"chunk_id": str, "url": str, "title": str, "heading_path": list, "text": str}


def as_domain(domain: dict | Domain | None) -> Domain | None:
    """The ``domain`` parameters as a :class:`~kaggle_qa.domain.Domain` (None stays None)."""
    return domain if domain is None or isinstance(domain, Domain) else Domain.from_params(domain)


def check_chunks(doc_chunks: list[dict]) -> None:
    """Raise naming the chunk index and key when a chunk breaks the doc_chunks contract."""
    if not isinstance(doc_chunks, list) or not doc_chunks:
        raise ValueError("doc_chunks: expected a non-empty JSON list of chunks")
    for index, chunk in enumerate(doc_chunks):
        for key, kind in CHUNK_KEYS.items():
            if not isinstance(chunk, dict) or not isinstance(chunk.get(key), kind):
                raise ValueError(f"doc_chunks: chunk {index} has no {kind.__name__} {key!r}")


def unique_chunks(doc_chunks: list[dict]) -> list[dict]:
    """The chunks with each chunk_id once (the first), so v2 and v3 can never share a chunk;
    the number of repeats dropped is logged."""
    seen: set[str] = set()
    unique = [c for c in doc_chunks if c["chunk_id"] not in seen and not seen.add(c["chunk_id"])]
    if len(unique) < len(doc_chunks):
        logger.warning("doc_chunks: %d repeated chunk_id(s) dropped before the v2/v3 split", len(doc_chunks) - len(unique))
    return unique


def unusable_chunk_reason(chunk: dict) -> str | None:
    """Why a chunk can give no QA row (empty, or code only), or None."""
    if not chunk["text"].strip():
        return "empty chunk"
    if not any(not s.startswith("```") for s in split_sentences(chunk["text"])):
        return "code-only chunk"
    return None


def split_chunks(doc_chunks: list[dict], synthesis: dict) -> dict[str, list[str]]:
    """Chunk ids for the test set (v2) and the training set (v3), disjoint unless switched off;
    repeated chunk ids count once, and unusable chunks are listed with their reason."""
    check_chunks(doc_chunks)
    chunks = unique_chunks(doc_chunks)
    ids = sorted(chunk["chunk_id"] for chunk in chunks)
    random.Random(synthesis["seed"]).shuffle(ids)
    n_test = round(len(ids) * synthesis["test_chunk_share"])
    test = ids[:n_test]
    train = ids[n_test:] if synthesis["keep_test_chunks_out_of_train"] else ids
    unusable = {c["chunk_id"]: reason for c in chunks if (reason := unusable_chunk_reason(c))}
    logger.info("Chunks: %d for the test set (v2), %d for the training set (v3)", len(test), len(train))
    if unusable:
        logger.info("Chunks that can give no row: %s", dict(Counter(unusable.values())))
    return {
        "test": sorted(test),
        "train": sorted(train),
        "repeated_chunk_ids": len(doc_chunks) - len(chunks),
        "unusable": unusable,
    }


def _version_chunks(doc_chunks: list[dict], chunk_split: dict, which: str) -> list[dict]:
    chunks = [c for c in unique_chunks(doc_chunks) if c["chunk_id"] not in chunk_split.get("unusable", {})]
    if which == "all":
        return chunks
    wanted = set(chunk_split[which])
    return [chunk for chunk in chunks if chunk["chunk_id"] in wanted]


def task_counts(recipe: dict) -> dict[str, int]:
    """How many pairs of each task type one chunk's request asks for (largest remainders)."""
    n = recipe["pairs_per_chunk"]
    mix = {task: share for task, share in recipe["task_mix"].items() if share > 0}
    total = sum(mix.values())
    exact = {task: n * share / total for task, share in mix.items()}
    counts = {task: int(value) for task, value in exact.items()}
    for task in sorted(exact, key=lambda t: counts[t] - exact[t])[: n - sum(counts.values())]:
        counts[task] += 1
    return counts


def render_teacher_prompt(template: str, chunk: dict, recipe: dict, domain: Domain | None = None) -> str:
    """The teacher prompt for one chunk: the version's template filled from the chunk, the recipe
    and the domain (``$docs_title``, ``$audience``, …; generic words when there is none)."""
    counts = task_counts(recipe)
    names = {"yes_no": "yes/no", "true_false": "true/false", "extractive_qa": "extractive QA", "nli": "NLI"}
    bounds = recipe["output_words"]
    return fill_prompt(
        template,
        domain,
        title=chunk["title"],
        heading=" > ".join(chunk["heading_path"]) or chunk["title"],
        context=chunk["text"],
        n_pairs=sum(counts.values()),
        task_counts="\n".join(f"- {n} {names[task]} pair(s)" for task, n in counts.items() if n),
        output_guidance="\n".join(
            f"- {names[task]} outputs: {bounds[task]['min']} to {bounds[task]['max']} words." for task in counts
        ),
    )


def unusable_records(doc_chunks: list[dict], chunk_split: dict, synthesis: dict) -> list[dict]:
    """A quarantine record per version for every chunk that can give no row, with its reason."""
    by_id = {c["chunk_id"]: c for c in doc_chunks}
    records = []
    for version in VERSIONS:
        which = synthesis["versions"][version]["chunks"]
        ids = set(by_id) if which == "all" else set(chunk_split[which])
        for chunk_id, reason in sorted(chunk_split.get("unusable", {}).items()):
            if chunk_id in ids:
                chunk = by_id[chunk_id]
                records.append(quarantined({"chunk_id": chunk_id, "url": chunk["url"], "input": chunk["text"]}, version, reason))
    return records


def generate_candidates(
    doc_chunks: list[dict],
    chunk_split: dict,
    teacher_prompts: dict[str, Callable[[], str]],
    teacher_api_key: str | None,
    synthesis: dict,
    domain: dict | Domain | None = None,
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Candidate rows per version from the chosen teacher, plus malformed replies and usage; every
    question template and prompt names the `domain` (the ``domain`` parameters)."""
    check_chunks(doc_chunks)
    domain = as_domain(domain)
    candidates: dict[str, list[dict]] = {"malformed": unusable_records(doc_chunks, chunk_split, synthesis)}
    report: dict[str, Any] = {"teacher": synthesis["teacher"]}
    if synthesis["teacher"] == "offline":
        teacher = OfflineTeacher(doc_chunks, synthesis["offline"], synthesis["seed"], domain)
        for version in VERSIONS:
            recipe = synthesis["versions"][version]
            chunks = _version_chunks(doc_chunks, chunk_split, recipe["chunks"])
            candidates[version] = teacher.generate(chunks, recipe, version)
            logger.info("offline teacher: %d candidate rows for %s", len(candidates[version]), version)
        return candidates, report
    if synthesis["teacher"] == "openai":
        teacher = OpenAITeacher(synthesis["openai"], teacher_api_key)
        teacher_name = f"openai:{synthesis['openai']['model']}"
        report |= {"model": synthesis["openai"]["model"], "base_url": synthesis["openai"]["base_url"]}
    elif synthesis["teacher"] == "transformers":
        from .teachers.transformers_teacher import TransformersTeacher  # imports torch: only when asked for

        teacher = TransformersTeacher(synthesis["transformers"])
        teacher_name = f"transformers:{teacher.identity['name']}"
        report |= {"model": teacher.identity["name"], "base_url": "local (transformers)"}
    else:
        raise ValueError(
            f"synthesis.teacher: unknown teacher {synthesis['teacher']!r} (offline | openai | transformers)"
        )
    jobs = []
    for version in VERSIONS:
        recipe = synthesis["versions"][version]
        if recipe["prompt"] not in teacher_prompts:
            raise ValueError(
                f"synthesis.versions.{version}.prompt: no prompt file {recipe['prompt']!r} in conf/base/prompts/"
            )
        template = teacher_prompts[recipe["prompt"]]()
        jobs += [
            (version, chunk, render_teacher_prompt(template, chunk, recipe, domain))
            for chunk in _version_chunks(doc_chunks, chunk_split, recipe["chunks"])
        ]
    replies = teacher.complete_all([prompt for _, _, prompt in jobs])
    for version in VERSIONS:
        candidates[version] = []
    for (version, chunk, _), reply in zip(jobs, replies):
        rows, problems = parse_reply(reply, chunk, synthesis["versions"][version], teacher_name)
        candidates[version] += rows
        candidates["malformed"] += [
            quarantined({"chunk_id": chunk["chunk_id"], "url": chunk["url"]}, version, p["reason"], detail=p["detail"])
            for p in problems
        ]
    report |= {"prompts": len(jobs), **teacher.stats.as_dict()}
    logger.info("%s teacher: %s", synthesis["teacher"], report)
    return candidates, report


def filter_candidates(
    candidates: dict[str, list[dict]], doc_chunks: list[dict], synthesis: dict,
    retrieval_index: dict | None = None, retrieval: dict | None = None,
) -> tuple[list[dict], list[dict], list[dict], list[dict], dict]:
    """qa_v1, qa_v2, qa_v3 after the quality filters, every dropped row with its reason, counts.

    With `retrieval_index` and the ``retrieval`` parameters, open questions also pass the round
    trip (:mod:`.round_trip`): search with ``retrieval.method`` leads back to their chunk within
    ``filters.round_trip_max_rank``."""
    chunk_texts = {chunk["chunk_id"]: chunk["text"] for chunk in doc_chunks}
    max_rank = synthesis["filters"].get("round_trip_max_rank")
    retriever, method = None, None
    if retrieval_index is not None and max_rank is not None:
        settings = {key: retrieval[key] for key in ("rrf_k", "batch_size") if key in retrieval}
        retriever, method = Retriever(retrieval_index, **settings), retrieval["method"]
    kept, quarantine, report = {}, list(candidates["malformed"]), {}
    test_sets_first = sorted(VERSIONS, key=lambda v: synthesis["versions"][v]["chunks"] == "train")
    for version in test_sets_first:
        rows, recipe = candidates[version], synthesis["versions"][version]
        held_out = None
        if recipe["chunks"] == "train" and synthesis["keep_test_chunks_out_of_train"]:
            # The docs repeat passages across sections: keep test questions out of training
            # even when they come from another chunk (see filters.test_set_leak).
            held_out = RougeIndex(synthesis["filters"]["max_question_rouge_l"])
            for test_version in (v for v in VERSIONS if synthesis["versions"][v]["chunks"] == "test"):
                for row in kept[test_version]:
                    held_out.add(row["instruction"], payload=row["input"])
        kept[version], dropped = filter_rows(
            rows, version, recipe, synthesis["filters"], chunk_texts, held_out, open_answer_phrases(synthesis)
        )
        kept[version], unfound = round_trip_filter(kept[version], version, retriever, method, max_rank)
        dropped += unfound
        quarantine += dropped
        malformed = [r for r in candidates["malformed"] if r["version"] == version]
        reasons = dict(Counter(record["reason"].split(" (")[0] for record in dropped + malformed))
        report[version] = {"candidates": len(rows), "kept": len(kept[version]), "dropped": reasons}
        logger.info("%s: kept %d of %d candidates; dropped %s", version, len(kept[version]), len(rows), reasons)
    return kept["v1"], kept["v2"], kept["v3"], quarantine, report


def build_datasheet(
    qa_v1: list[dict],
    qa_v2: list[dict],
    qa_v3: list[dict],
    qa_v1_published: list[dict],
    qa_v3_published: list[dict],
    filter_report: dict,
    teacher_report: dict,
    chunk_split: dict,
    synthesis: dict,
    domain: dict | Domain | None = None,
) -> tuple[str, dict, Figure]:
    """The datasheet (Tables 1 and 5, shortcut audit, filters, v2/v3 overlap, sample rows) as
    markdown, JSON, plot. The published versions are audited beside ours, for comparison."""
    domain = as_domain(domain)
    versions = {"v1": qa_v1, "v2": qa_v2, "v3": qa_v3}
    published = {"v1_published": qa_v1_published, "v3_published": qa_v3_published}
    audit = shortcut_audit(versions | published, synthesis["audit"], synthesis["seed"], open_answer_phrases(synthesis))
    failing = [v for v in versions if not audit["versions"][v]["passes"]]
    if failing:
        logger.warning("Shortcut audit: %s fail(s): %s", ", ".join(failing), {v: audit["versions"][v]["failing"] for v in failing})
    record = datasheet_record(versions, filter_report, teacher_report, chunk_split, synthesis, domain)
    record |= {"shortcut_audit": audit}
    return datasheet_markdown(record), record, datasheet_figure(versions)
