"""The user's own questions, answered as the assistant answers them: retrieved context, base vs fine-tuned.

``user_questions`` (:mod:`kaggle_qa.user_questions`) holds questions a user of the docs would ask,
each with the answer they expect and the page that holds it. Only its **reported** part
(:func:`~kaggle_qa.user_questions.report_rows`) is evaluated here; the selection part is kept for
model selection and never shown in this section.

Each question goes through the assistant's real situation: :meth:`kaggle_qa.retrieval.Retriever.retrieve`
with ``params:retrieval`` (as ``kaggle-qa ask``), the same refusal rule (:func:`kaggle_qa.retrieval.refusal_reason`: best dense cosine below the
threshold in use, :func:`kaggle_qa.retrieval.relevance_threshold`, a term the docs do not know, or the
fine-tuned model's lift (:mod:`kaggle_qa.context_lift`, ``question_lift``) below the lift threshold in use;
the answer is then the refusal message, for both columns), the top-k chunks fitted into the one training prompt as the assistant fits them
(:func:`kaggle_qa.prompting.fit_context`). Both models answer
through the evaluate pipeline's own :func:`~.nodes.answer_base` (with its base-result cache,
``user_questions_base_answers_cache``) and :func:`~.nodes.answer_fine_tuned`, with the main
evaluation's settings (max_new_tokens from the adapter's recorded answer lengths).

Measured per question, for both models, beside the metrics of the rest of the evaluation
(:func:`~kaggle_qa.metrics.scoring.score_answers`, :func:`~kaggle_qa.metrics.summary.summarize`;
answer loss is teacher-forced on the expected answer given the retrieved context):

- ``correct``: not refused, and every **key fact** the question file names for the question
  (``key_facts``, :func:`kaggle_qa.user_questions.fact_found`: the option, command or value the
  answer turns on) is stated. A question without key facts falls back to the **ROUGE-L recall** of
  the expected answer (stemmed, rouge_score) of at least ``user_questions.correct_recall``. Recall,
  not F1, so a complete answer that explains more is not penalised, while a lead-in sentence
  without the answer ("To dump into a JSON file:") is not correct. The recall rule is reported for
  every question too (``recall_correct``), so neither rule is the only view;
- ``gold_page_cited``: the expected page is among the cited sources (urls compared without
  ``#fragment``, trailing ``/``, ``index.html`` or ``.html``, and without scheme and host, so a question file
  written against the live site matches a crawl of its snapshot);
- ``refused``: the assistant answered "not covered" (the same for both models: retrieval and the fine-tuned
  assistant's lift decide).

Rates have 95 % bootstrap intervals resampling the expected pages (questions about one page are
not independent), and each change base → fine-tuned a paired p-value over the same pages (shown
raw, unstarred: the report stars only its headline family).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from tabulate import tabulate

from kaggle_qa.domain import Domain, refusal_message
from kaggle_qa.metrics.bootstrap import ChunkBootstrap, Ratio, estimate_text
from kaggle_qa.metrics.scoring import score_answers
from kaggle_qa.metrics.summary import summarize
from kaggle_qa.prompting import fit_context
from kaggle_qa.qa_schema import infer_task_type
from kaggle_qa.retrieval import refusal_reason, relevance_threshold
from kaggle_qa.context_lift import lift_threshold
from kaggle_qa.user_questions import as_qa_rows, fact_found, report_rows, selection_rows

from .nodes import answer_base, answer_fine_tuned, read_adapter_settings, shared_retriever, shared_tokenizer

logger = logging.getLogger(__name__)

MODELS = ("base", "fine_tuned")
TITLE = "## Your questions: the assistant in retrieved mode, base vs fine-tuned"
RATES = (  # (per-question field, name in the table); each a share of the reported questions
    ("correct", "Correct (key facts stated, else ROUGE-L recall ≥ threshold; not refused)"),
    ("recall_correct", "ROUGE-L recall of the expected answer ≥ threshold, not refused"),
    ("rougeL_recall", "ROUGE-L recall of the expected answer"),
    ("gold_page_cited", "Gold page cited"),
    ("refused", "Refused (\"not covered\")"),
)
FACTS_RATE = ("key_facts_found", "Key facts stated (share of a question's key facts)")  # when every question has them
SHARES = ("rougeL_recall", "key_facts_found")  # per-question shares, not yes/no: no count
SUMMARY_ROWS = (("rougeL", "ROUGE-L F1"), ("semantic_similarity", "Semantic similarity (MiniLM cosine)"),
                ("answer_loss", "Loss on the expected answer's tokens"), ("grounded_rate", "Grounded in the retrieved context"))


def page_key(url: str) -> str:
    """A docs page's identity for "is it cited": the url's path without fragment, trailing ``/``,
    ``index.html`` or ``.html`` (scheme and host dropped: ``/en/8.1.x/options.html`` = ``…/options/``)."""
    path = urlsplit(url.strip()).path
    path = path.removesuffix("index.html").removesuffix(".html").rstrip("/")
    return path or "/"


def rouge_l_recall(expected: str, answer: str) -> float:
    """Share of the expected answer's (stemmed) words the answer contains in order (rouge_score ROUGE-L recall)."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(expected, answer or "")["rougeL"].recall)


def _skip(reason: str) -> tuple[dict, list, str, dict]:
    logger.info("User questions: %s", reason)
    return {"skipped": reason}, [], f"{TITLE}\n\n{reason}\n", {"key": None, "skipped": reason}


def evaluate_user_questions(
    base_model: str,
    adapter: str,
    user_questions: list[dict] | None,
    retrieval_index: dict,
    retrieval: dict,
    retrieval_metrics: dict,
    evaluate: dict,
    user_params: dict,
    domain: dict,
    cache: dict | None = None,
    question_lift: dict | None = None,
) -> tuple[dict, list[dict], str, dict]:
    """The reported part of the user's questions, base vs fine-tuned in retrieved mode (module docstring).

    Returns the metrics, one prediction record per question, the report section (markdown) and
    the base model's results (saved as ``user_questions_base_answers``, the cache's source).
    """
    if user_questions is None:
        return _skip("No user question file is configured (catalog entry `user_questions` has `filepath: null`): "
                     "this site is judged on its synthesized test set only. See docs/evaluate.md, \"Your questions\".")
    reported = report_rows(user_questions, user_params)
    held = len(selection_rows(user_questions, user_params))
    if not reported:
        return _skip(f"All {len(user_questions)} user questions fall in the selection part "
                     f"(user_questions.selection_fraction {user_params['selection_fraction']}): none to report.")
    settings = read_adapter_settings(base_model, adapter, evaluate)
    threshold = relevance_threshold(retrieval, retrieval_metrics)
    min_lift = lift_threshold(retrieval, retrieval_metrics)
    lift = (question_lift or {}).get("scores") or {}
    retriever = shared_retriever(retrieval_index, retrieval["rrf_k"], retrieval["batch_size"])  # one per index per process
    tokenizer, budget = shared_tokenizer(base_model), settings["max_length"] - settings["max_new_tokens"]
    rows, found = [], []
    for index, (source, row) in enumerate(zip(reported, as_qa_rows(reported))):
        result = retriever.retrieve(row["instruction"], retrieval["top_k"], retrieval["method"])
        found.append(result)
        rows.append({**row, "id": f"user:{index}", "task_type": infer_task_type(row), "chunk": page_key(source["url"]),
                     "input": fit_context(tokenizer, [hit["text"] for hit in result.hits], row["instruction"], budget)})
    base = answer_base(base_model, rows, settings, evaluate, cache or {})
    raw = answer_fine_tuned(base_model, adapter, rows, settings, evaluate, base)
    refusal = refusal_message(Domain.from_params(domain))
    if min_lift is not None:
        missing = [row["instruction"] for row in rows if row["instruction"] not in lift]
        if missing:
            raise ValueError(f"question_lift has no lift for user question {missing[0]!r} ({len(missing)} like it),"
                             f" but a lift threshold ({min_lift:.3f}) is in use: rerun the evaluate pipeline")
    # the fine-tuned assistant's refusal, applied to both columns: the base answers the same questions
    refused = [refusal_reason(result, threshold, retrieval.get("max_unknown_terms"), lift.get(row["instruction"]),
                              min_lift) is not None for row, result in zip(rows, found)]
    cited = [sorted({page_key(hit["url"]) for hit in result.hits}) for result in found]
    gold_cited = [not refuse and row["chunk"] in pages for row, pages, refuse in zip(rows, cited, refused)]
    records, answers = {}, {}
    for label in MODELS:
        model_rows = raw["models"][label]["rows"]
        answers[label] = [refusal if refuse else r["answer"] for r, refuse in zip(model_rows, refused)]
        scores = score_answers(rows, answers[label], semantic_similarity=evaluate["semantic_similarity"],
                               bertscore=evaluate["bertscore"], groundedness=evaluate["groundedness"],
                               choices=[r.get("choice") for r in model_rows], label=f"{label} answers, user questions")
        records[label] = []
        for row, result, score, answer, refuse, gold in zip(rows, model_rows, scores, answers[label], refused, gold_cited):
            recall = 0.0 if refuse else rouge_l_recall(row["output"], answer)
            facts = row.get("key_facts") or []
            stated = 0.0 if refuse or not facts else sum(fact_found(answer, fact) for fact in facts) / len(facts)
            enough = stated == 1.0 if facts else recall >= user_params["correct_recall"]
            records[label].append({**result, **score, "answer": answer, "refused": float(refuse),
                                   "gold_page_cited": float(gold), "rougeL_recall": recall,
                                   **({"key_facts_found": stated} if facts else {}),
                                   "recall_correct": float(not refuse and recall >= user_params["correct_recall"]),
                                   "correct": float(not refuse and enough)})
    summary_rows = [{"task_type": r["task_type"], "output": r["output"], "chunk": r["chunk"]} for r in rows]
    summary = summarize(summary_rows, records, choices=settings["choices"], bootstrap=evaluate["bootstrap"])
    metrics = {
        "questions": len(user_questions), "reported": len(rows), "selection_held_out": held,
        "selection_fraction": user_params["selection_fraction"], "correct_recall": user_params["correct_recall"],
        "relevance_threshold": threshold,
        "lift_threshold": min_lift,
        "retrieval": {key: retrieval[key] for key in ("method", "top_k")},
        "max_new_tokens": settings["max_new_tokens"],
        "base_results": {"key": base["key"], "reused_from": base.get("reused_from")},
        "rates": _rates(rows, records, evaluate["bootstrap"]),
        **summary,
    }
    predictions = [
        {"id": row["id"], "question": row["instruction"], "expected_answer": row["output"], "url": source["url"],
         "cited_pages": pages, "relevance": round(result.relevance, 4),
         "lift": lift.get(row["instruction"]), "refused": refuse, "gold_page_cited": gold,
         **{f"{label}_answer": answers[label][i] for label in MODELS},
         **{f"{label}_correct": bool(records[label][i]["correct"]) for label in MODELS},
         "scores": {label: {key: value for key, value in records[label][i].items() if key != "answer"} for label in MODELS}}
        for i, (row, source, pages, result, refuse, gold) in enumerate(zip(rows, reported, cited, found, refused, gold_cited))
    ]
    logger.info("User questions (%d reported): correct base %s, fine-tuned %s; gold page cited %s; refused %s",
                len(rows), *(metrics["rates"][label]["correct"]["value"] for label in MODELS),
                metrics["rates"]["fine_tuned"]["gold_page_cited"]["value"], metrics["rates"]["fine_tuned"]["refused"]["value"])
    return metrics, predictions, user_questions_markdown(metrics, predictions, evaluate.get("max_cell_chars", 300)), base


def rate_fields(rows: list[dict]) -> tuple[tuple[str, str], ...]:
    """The rates reported: :data:`RATES`, plus the key-fact share when every question names key facts."""
    return (*RATES[:1], FACTS_RATE, *RATES[1:]) if rows and all(r.get("key_facts") for r in rows) else RATES


def _rates(rows: list[dict], records: dict[str, list[dict]], bootstrap: dict) -> dict:
    """Each rate of :data:`RATES` per model with its page-bootstrap interval; paired changes."""
    boot = ChunkBootstrap([row["chunk"] for row in rows], bootstrap.get("resamples", 1000), bootstrap.get("seed", 0),
                          bootstrap.get("confidence", 0.95))
    ones = [1.0] * len(rows)
    fields = rate_fields(rows)
    stats = {label: {field: Ratio([r[field] for r in records[label]], ones) for field, _ in fields} for label in MODELS}
    rates = {label: {field: {"value": boot.point(stat), "interval": boot.interval(stat),
                             "count": int(sum(r[field] >= 1.0 for r in records[label])) if field not in SHARES else None}
                     for field, stat in stats[label].items()} for label in MODELS}
    alpha = bootstrap.get("alpha", 0.05)
    rates["change"] = {}
    for field, _ in fields:
        change = boot.paired(stats["base"][field], stats["fine_tuned"][field])
        if change is not None:
            rates["change"][field] = {**change, "significant": change["p_value"] < alpha}
    return rates


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user_questions_markdown(metrics: dict, predictions: list[dict], max_cell_chars: int = 300) -> str:
    """The report section: rates and metrics with intervals, then one row per question."""
    if metrics.get("skipped"):
        return f"{TITLE}\n\n{metrics['skipped']}\n"
    n, rates = metrics["reported"], metrics["rates"]
    rows = []
    for field, name in RATES[:1] + ((FACTS_RATE,) if FACTS_RATE[0] in rates["fine_tuned"] else ()) + RATES[1:]:
        if field not in rates["fine_tuned"]:
            continue
        change = rates["change"].get(field)
        rows.append([name, *(estimate_text(rates[label][field], n) for label in MODELS),
                     "–" if not change else f"{change['delta']:+.3f} (p={change['p_value']:.3f})"])
    for key, name in SUMMARY_ROWS:
        values = [metrics["metrics"][label]["overall"].get(key) for label in MODELS]
        if all(v is None for v in values):
            continue
        spans = [metrics["intervals"][label]["overall"].get(key) for label in MODELS]
        change = metrics["changes"].get("base→fine_tuned", {}).get("overall", {}).get(key)
        rows.append([name, *(("–" if v is None else f"{v:.3f}" + (f" [{s[0]:.2f}, {s[1]:.2f}]" if s else ""))
                             for v, s in zip(values, spans)),
                     "–" if not change else f"{change['delta']:+.3f} (p={change['p_value']:.3f})"])
    table = tabulate(rows, headers=["Measure", "Base [95 % CI]", "Fine-tuned [95 % CI]", "Change (paired p)"],
                     tablefmt="github")
    per_question = tabulate(
        [[i + 1, _cut(p["question"], max_cell_chars), _cut(p["expected_answer"], max_cell_chars),
          _cut(p["base_answer"], max_cell_chars), "✓" if p["base_correct"] else "✗",
          _cut(p["fine_tuned_answer"], max_cell_chars), "✓" if p["fine_tuned_correct"] else "✗",
          "yes" if p["gold_page_cited"] else "no", "yes" if p["refused"] else "no"]
         for i, p in enumerate(predictions)],
        headers=["#", "Question", "Expected answer", "Base answer", "ok", "Fine-tuned answer", "ok", "gold page cited",
                 "refused"], tablefmt="github")
    run = metrics["base_results"]
    reuse = (f"reused from `user_questions_base_answers` version {run['reused_from']}" if run.get("reused_from")
             else "computed")
    return "\n".join([
        TITLE,
        "",
        f"{n} questions of the user question file reported here; {metrics['selection_held_out']} more (the selection"
        f" part, share {metrics['selection_fraction']}, chosen by a hash of the question) are kept for model selection"
        " and not shown. Each question is answered as `kaggle-qa ask` answers it: top"
        f" {metrics['retrieval']['top_k']} chunks by `{metrics['retrieval']['method']}`, refused below relevance"
        f" {metrics['relevance_threshold']:.3f}"
        + (f" or below lift {metrics['lift_threshold']:.3f} (the fine-tuned model's, for both columns)"
           if metrics.get("lift_threshold") is not None else "")
        + f", answers up to {metrics['max_new_tokens']} tokens."
        " **Correct**: not refused, and every key fact the question file names for it is stated (whole words, case,"
        " quotes and spacing around `=` ignored); for a question without key facts, ROUGE-L recall of the expected"
        f" answer ≥ {metrics['correct_recall']}."
        f" [95 % bootstrap interval over the expected pages]; p: paired, over the same pages, raw (exploratory,"
        f" unstarred). Base results: {reuse}.",
        "",
        table,
        "",
        per_question,
        "",
    ])
