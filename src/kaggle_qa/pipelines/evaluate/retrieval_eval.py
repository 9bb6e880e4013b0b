"""How well retrieval finds the answer, and where "the docs do not cover this" starts.

For every test question the gold chunk is the chunk it was written from (``row["chunk_id"]``).
:func:`evaluate_retrieval` ranks every chunk for every question with each method (dense,
BM25, hybrid; :mod:`kaggle_qa.retrieval`) and reports hit rate at 1/3/5 and mean reciprocal
rank.

It also calibrates the **refusal threshold** on the site's own questions, honestly: the relevance
score (the best dense cosine, which the assistant thresholds) of in-domain questions (the test set's
open questions, what an assistant is asked, plus the selection part of ``user_questions``) and of off-topic ones (``off_topic_questions``:
``{"question", "kind": "near" | "far"}`` rows, or plain strings, which count as ``far``) is split by
a hash of each question into a **calibration** part, where the threshold with the best balanced
accuracy (in-domain, near and far as three classes; answering at least
``refusal_calibration.min_in_domain_answered`` of the in-domain ones) is chosen, and a disjoint **reported** part, where its answered / refused rates are
measured, near-domain and far off-topic separately. The chosen threshold is recorded in
``retrieval_metrics`` (``relevance.chosen.threshold``), which the assistant reads back
(:func:`kaggle_qa.retrieval.relevance_threshold`); ``retrieval.relevance_threshold`` set to a
number overrides it. A question the unknown-term rule refuses (``retrieval.max_unknown_terms``,
:func:`kaggle_qa.retrieval.refusal_reason`) counts as refused at every threshold, as the assistant
refuses it, and how many each rule caught is recorded.

With the fine-tuned model's **context lift** of each question (``question_lift``, node
``score_question_lift``, :mod:`kaggle_qa.context_lift`), the relevance and lift thresholds are chosen
together on the calibration part (:func:`calibrate_with_lift`) and reported together on the other;
the lift threshold is recorded as ``relevance.chosen.lift_threshold``.
"""

from __future__ import annotations

import logging

import numpy as np
from tabulate import tabulate

from kaggle_qa.qa_schema import OPEN_TASKS, infer_task_type
from kaggle_qa.retrieval import METHODS, Retriever
from kaggle_qa.user_questions import hash_fraction, normalise_question, selection_rows

from .nodes import shared_retriever

logger = logging.getLogger(__name__)

CUTOFFS = (1, 3, 5)
OFF_TOPIC_KINDS = ("near", "far")
CALIBRATION_SALT = "refusal-calibration"
REFUSED_BY_TERMS = -1.0  # the relevance a question refused for unknown terms counts as (below any cosine threshold)


def gold_ranks(rankings: list[np.ndarray], gold: list[int]) -> np.ndarray:
    """1-based rank of each question's gold chunk in its ranking."""
    return np.array([int(np.flatnonzero(order == g)[0]) + 1 for order, g in zip(rankings, gold)])


def rank_metrics(ranks: np.ndarray) -> dict:
    """hit@1/3/5 (share of questions whose gold chunk is in the top k) and MRR."""
    metrics = {f"hit@{k}": float(np.mean(ranks <= k)) for k in CUTOFFS}
    metrics["mrr"] = float(np.mean(1.0 / ranks))
    return metrics


def calibrate_threshold(in_domain: np.ndarray, off_topic: np.ndarray | dict[str, np.ndarray],
                        min_answered: float = 0.0) -> dict:
    """The relevance threshold with the best balanced accuracy: the mean of the in-domain answered
    rate and the refused rate of each kind of off-topic question (`off_topic`: one array, or
    near / far arrays; an empty kind is left out). Each kind counts as one class, so twenty far
    questions, which any threshold refuses, cannot outvote eight near ones. Only thresholds that
    answer at least `min_answered` of the in-domain questions are candidates (the lowest candidate
    when none does): with eight near questions on one side, the best mean can refuse four in ten
    in-domain questions to refuse the last near one.

    Candidates are midpoints between neighbouring observed scores, so the chosen value lies
    strictly between an in-domain and an off-topic score rather than on one of them.
    """
    kinds = {kind: np.asarray(v) for kind, v in
             (off_topic.items() if isinstance(off_topic, dict) else [("off_topic", off_topic)]) if len(v)}
    values = np.unique(np.concatenate([in_domain, *kinds.values()]))
    candidates = (values[:-1] + values[1:]) / 2 if len(values) > 1 else values
    best = None
    allowed = [t for t in candidates if np.mean(in_domain >= t) >= min_answered] or list(candidates[:1])
    for threshold in allowed:
        answered = float(np.mean(in_domain >= threshold))
        refused = {kind: float(np.mean(scores < threshold)) for kind, scores in kinds.items()}
        score = (answered + sum(refused.values())) / (1 + len(refused))
        if best is None or score > best["balanced_accuracy"]:
            pooled = np.concatenate(list(kinds.values()))
            best = {"threshold": float(threshold), "in_domain_answered": answered,
                    "off_topic_refused": float(np.mean(pooled < threshold)), "balanced_accuracy": score}
    return best


def _quantiles(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    return {name: float(np.quantile(values, q)) for name, q in
            (("min", 0.0), ("p05", 0.05), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1.0))}


def off_topic_rows(questions: list, source: str = "off_topic_questions") -> list[dict]:
    """``{"question", "kind"}`` rows from a list of such objects or of plain strings (kind ``far``);
    a bad entry fails naming `source` and the row."""
    if not isinstance(questions, list):
        raise ValueError(f"{source}: expected a JSON list, got {type(questions).__name__}")
    rows = []
    for index, entry in enumerate(questions):
        if isinstance(entry, str):
            entry = {"question": entry, "kind": "far"}
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not entry["question"].strip():
            raise ValueError(f"{source}: row {index} is neither a question string nor an object with a non-empty "
                             f"'question' string: {entry!r}")
        kind = entry.get("kind", "far")
        if kind not in OFF_TOPIC_KINDS:
            raise ValueError(f"{source}: row {index} kind {kind!r} is not one of {list(OFF_TOPIC_KINDS)}")
        rows.append({"question": entry["question"], "kind": kind})
    return rows


def calibration_side(question: str, fraction: float) -> bool:
    """Whether a question falls in the calibration part (share `fraction`) rather than the reported one."""
    return hash_fraction(normalise_question(question), CALIBRATION_SALT) < fraction


def _answered(scores: np.ndarray, threshold: float, lift: np.ndarray | None = None,
              lift_threshold: float | None = None) -> np.ndarray:
    """Which questions the rule answers: relevance at or above the threshold, and lift at or above its
    threshold when one is in use (:func:`kaggle_qa.retrieval.refusal_reason`)."""
    answered = np.asarray(scores) >= threshold
    if lift is not None and lift_threshold is not None:
        answered &= np.asarray(lift) >= lift_threshold
    return answered


def _rates(threshold: float, in_domain: np.ndarray, off_topic: dict[str, np.ndarray],
           lift_threshold: float | None = None, in_lift: np.ndarray | None = None,
           off_lift: dict[str, np.ndarray] | None = None) -> dict:
    rates = {"in_domain_answered": float(np.mean(_answered(in_domain, threshold, in_lift, lift_threshold)))
             if len(in_domain) else None,
             "in_domain_questions": int(len(in_domain))}
    for kind, scores in off_topic.items():
        answered = _answered(scores, threshold, (off_lift or {}).get(kind), lift_threshold)
        rates[f"{kind}_refused"] = float(np.mean(~answered)) if len(scores) else None
        rates[f"{kind}_questions"] = int(len(scores))
    return rates


def calibrate_with_lift(in_domain: np.ndarray, in_lift: np.ndarray, off_topic: dict[str, np.ndarray],
                        off_lift: dict[str, np.ndarray], min_answered: float = 0.0) -> dict:
    """:func:`calibrate_threshold` over two thresholds at once: a question is answered when its relevance
    and its lift (:mod:`kaggle_qa.context_lift`) both reach theirs. Lift candidates are the midpoints
    of the observed lifts plus "no lift threshold", so lift is used only where it raises the
    balanced accuracy. Among equal balanced accuracies the pairs answering the most in-domain questions
    are kept, and of those the one nearest their centre (in candidate ranks): with a few dozen questions
    a side, many pairs tie, and the most permissive of them let 4 of 25 far questions through on
    the default site's reported part where the centre let 3 (docs/research-log.md)."""
    kinds = {kind: (np.asarray(v), np.asarray(off_lift[kind])) for kind, v in off_topic.items() if len(v)}
    relevance = np.unique(np.concatenate([in_domain, *(v for v, _ in kinds.values())]))
    rel_candidates = (relevance[:-1] + relevance[1:]) / 2 if len(relevance) > 1 else relevance
    observed = np.unique(np.concatenate([in_lift, *(s for _, s in kinds.values())]))
    lift_candidates = [None, *((observed[:-1] + observed[1:]) / 2)]
    # relevance candidates x questions, computed once; each lift candidate only masks them
    in_above = in_domain[None, :] >= rel_candidates[:, None]
    off_above = {kind: v[None, :] >= rel_candidates[:, None] for kind, (v, _) in kinds.items()}
    best_key, tied = None, []
    for j, lift_threshold in enumerate(lift_candidates):
        def answered(above, lift):
            return above if lift_threshold is None else above & (lift >= lift_threshold)[None, :]
        in_rate = answered(in_above, in_lift).mean(axis=1)
        refused = {kind: 1.0 - answered(off_above[kind], s).mean(axis=1) for kind, (_, s) in kinds.items()}
        score = (in_rate + sum(refused.values())) / (1 + len(refused))
        for i in np.flatnonzero(in_rate >= min_answered):
            key = (round(float(score[i]), 12), round(float(in_rate[i]), 12))
            if best_key is None or key > best_key:
                best_key, tied = key, [(int(i), j)]
            elif key == best_key:
                tied.append((int(i), j))
    if not tied:  # no pair answers enough: the 1-D rule's fallback, the lowest relevance candidate
        return {**calibrate_threshold(in_domain, {k: v for k, (v, _) in kinds.items()}, min_answered),
                "lift_threshold": None}
    ranks = np.array(tied, dtype=float) / [len(rel_candidates), len(lift_candidates)]
    i, j = tied[int(np.argmin(((ranks - ranks.mean(axis=0)) ** 2).sum(axis=1)))]
    threshold, lift_threshold = float(rel_candidates[i]), lift_candidates[j]
    pooled_v = np.concatenate([v for v, _ in kinds.values()])
    pooled_l = np.concatenate([s for _, s in kinds.values()])
    return {"threshold": threshold,
            "lift_threshold": None if lift_threshold is None else float(lift_threshold),
            "in_domain_answered": best_key[1],
            "off_topic_refused": float(np.mean(~_answered(pooled_v, threshold, pooled_l, lift_threshold))),
            "balanced_accuracy": best_key[0],
            "tied_pairs": len(tied)}


def calibration_part(in_domain: list[tuple[str, float]], off_topic: list[tuple[str, str, float]], fraction: float,
                     calibration: bool, lift: dict[str, float] | None = None) -> tuple:
    """One part's scores (:func:`calibration_side`: the calibration part, or the reported one): in-domain
    relevances, off-topic relevances per kind, and the same two for lift (None without `lift`)."""
    inside = [(q, score) for q, score in in_domain if calibration_side(q, fraction) == calibration]
    outside = {kind: [(q, score) for q, k, score in off_topic if k == kind and calibration_side(q, fraction) == calibration]
               for kind in OFF_TOPIC_KINDS}
    return (np.array([score for _, score in inside]),
            {kind: np.array([score for _, score in rows]) for kind, rows in outside.items()},
            None if lift is None else np.array([lift[q] for q, _ in inside]),
            None if lift is None else {kind: np.array([lift[q] for q, _ in rows]) for kind, rows in outside.items()})


def calibrate_refusal(in_domain: list[tuple[str, float]], off_topic: list[tuple[str, str, float]],
                      fraction: float, min_answered: float = 0.0, lift: dict[str, float] | None = None) -> dict:
    """Choose the threshold on the calibration part, report it on the disjoint reported part.

    `in_domain`: (question, relevance); `off_topic`: (question, kind, relevance). Each question goes
    to one part by :func:`calibration_side`; the two parts share no question. With `lift` (question →
    lift, :mod:`kaggle_qa.context_lift`; every question must have one) a lift threshold is chosen
    together with the relevance threshold (:func:`calibrate_with_lift`).
    """
    if lift is not None:
        missing = [q for q, _ in in_domain if q not in lift] + [q for q, _, _ in off_topic if q not in lift]
        if missing:
            raise ValueError(f"question_lift has no lift for {len(missing)} calibration question(s), e.g. "
                             f"{missing[0]!r}: it was scored on other questions; rerun the evaluate pipeline")
    inside, outside, in_lift, off_lift = calibration_part(in_domain, off_topic, fraction, True, lift)
    pooled = np.concatenate(list(outside.values()))
    if not len(inside) or not len(pooled):
        raise ValueError(
            f"refusal calibration: the calibration part holds {len(inside)} in-domain and {len(pooled)} off-topic "
            f"questions (fraction {fraction}); it needs at least one of each: add questions or change "
            "refusal_calibration.calibration_fraction"
        )
    if lift is None:
        chosen = {**calibrate_threshold(inside, outside, min_answered), "lift_threshold": None}
    else:
        chosen = calibrate_with_lift(inside, in_lift, outside, off_lift, min_answered)
    threshold, lift_threshold = chosen["threshold"], chosen["lift_threshold"]
    reported = calibration_part(in_domain, off_topic, fraction, False, lift)
    return {
        "threshold": threshold,
        "lift_threshold": lift_threshold,
        "lift_scored": lift is not None,
        "calibration_fraction": fraction,
        "min_in_domain_answered": min_answered,
        "calibration": {**_rates(threshold, inside, outside, lift_threshold, in_lift, off_lift),
                        "balanced_accuracy": chosen["balanced_accuracy"]},
        "reported": _rates(threshold, reported[0], reported[1], lift_threshold, *reported[2:]),
        "calibration_questions": sorted(
            [q for q, _ in in_domain if calibration_side(q, fraction)]
            + [q for q, _, _ in off_topic if calibration_side(q, fraction)]),
    }


def in_domain_questions(test_set: list[dict], user_questions: list[dict] | None,
                        user_params: dict | None) -> tuple[list[str], int]:
    """The in-domain questions the refusal is calibrated on (the test set's open questions, what an assistant
    is asked, else all its rows; plus the selection part of `user_questions`) and how many are the user's."""
    open_rows = [row for row in test_set if infer_task_type(row) in OPEN_TASKS]
    questions = [row["instruction"] for row in open_rows or test_set]
    selected = selection_rows(user_questions, user_params) if user_questions and user_params else []
    return questions + [row["question"] for row in selected], len(selected)


def evaluate_retrieval(
    retrieval_index: dict, test_set: list[dict], off_topic_questions: list, retrieval: dict, evaluate: dict,
    user_questions: list[dict] | None = None, user_params: dict | None = None, calibration: dict | None = None,
    question_lift: dict | None = None,
) -> tuple[dict, str]:
    """Hit rate / MRR per method on every test question, and the refusal-threshold calibration
    (chosen on one part of the questions, reported on the other; see the module docstring)."""
    name = evaluate.get("test_set_name", "test set")
    off_topic = off_topic_rows(off_topic_questions)
    if not off_topic:
        raise ValueError("off_topic_questions is empty: the relevance threshold cannot be calibrated")
    fraction = (calibration or {}).get("calibration_fraction", 0.5)
    min_answered = (calibration or {}).get("min_in_domain_answered") or 0.0
    retriever = shared_retriever(retrieval_index, retrieval["rrf_k"], retrieval["batch_size"])  # one per index per process
    position = {chunk["chunk_id"]: i for i, chunk in enumerate(retriever.chunks)}
    missing = [(i, row["chunk_id"]) for i, row in enumerate(test_set)
               if row.get("chunk_id") and row["chunk_id"] not in position]
    if missing:
        i, chunk_id = missing[0]
        raise ValueError(
            f"{name} row {i}: chunk_id {chunk_id!r} is not in retrieval_index ({len(missing)} rows like it);"
            " build the index and the test set from the same ingestion run"
        )
    # the assistant is asked questions, not true/false statements or NLI hypotheses: its open ones
    in_domain, users = in_domain_questions(test_set, user_questions, user_params)
    scored = (question_lift or {}).get("scores")
    relevance = _relevance_section(retriever, in_domain, off_topic, fraction, retrieval, users, min_answered,
                                   lift=scored if scored else None)
    if scored:
        relevance["lift"] = {key: question_lift[key] for key in ("model", "compute_dtype", "budget")
                             if key in question_lift}
    without = sum(not row.get("chunk_id") for row in test_set)
    test_set = [row for row in test_set if row.get("chunk_id")]
    if without:
        logger.warning("%s: %d rows carry no chunk_id (e.g. the paper's published data): no gold chunk, not scored "
                       "for retrieval", name, without)
    if not test_set:
        reason = f"{name} has no row with a chunk_id: there is no gold chunk to find"
        result = {"skipped": reason, "relevance": relevance}
        return result, "\n".join([f"## Retrieval: is the gold chunk found?\n\nSkipped: {reason}.\n",
                                   *refusal_markdown(relevance)])
    questions = [row["instruction"] for row in test_set]
    gold = [position[row["chunk_id"]] for row in test_set]
    scores = retriever.scores(questions)
    per_method, per_task = {}, {}
    task_types = np.array([row.get("task_type", "unknown") for row in test_set])
    for method in METHODS:
        rankings = [np.argsort(-s[method], kind="stable") for s in scores]
        ranks = gold_ranks(rankings, gold)
        per_method[method] = rank_metrics(ranks)
        per_task[method] = {t: rank_metrics(ranks[task_types == t]) for t in sorted(set(task_types))}
    result = {
        "test_set": name,
        "questions": len(test_set),
        "chunks": len(retriever.chunks),
        "encoder": retriever.encoder,
        "rrf_k": retrieval["rrf_k"],
        "methods": per_method,
        "per_task_type": per_task,
        "task_type_counts": {t: int(np.sum(task_types == t)) for t in sorted(set(task_types))},
        "best_method": max(METHODS, key=lambda m: (per_method[m]["mrr"], per_method[m]["hit@1"])),
        "configured_method": retrieval["method"],
        "relevance": relevance,
    }
    logger.info("Retrieval on %d %s questions: %s", len(test_set), name, per_method)
    return result, retrieval_markdown(result)


def _relevance_section(retriever: Retriever, in_domain_questions: list[str], off_topic: list[dict], fraction: float,
                       retrieval: dict, user_selection: int, min_answered: float = 0.0,
                       lift: dict[str, float] | None = None) -> dict:
    """Relevance distributions, the calibrated threshold and the configured override's rates."""
    max_unknown = retrieval.get("max_unknown_terms")

    def effective(questions: list[str]) -> list[float]:
        """Best dense cosine; a question the unknown-term rule refuses scores below any threshold."""
        return [REFUSED_BY_TERMS if max_unknown is not None and len(retriever.unknown_terms(q)) > max_unknown
                else float(s["dense"].max()) for q, s in zip(questions, retriever.scores(questions))]

    in_scores = effective(in_domain_questions)
    off_scores = effective([row["question"] for row in off_topic])
    scored_in = list(zip(in_domain_questions, in_scores))
    scored_off = [(row["question"], row["kind"], score) for row, score in zip(off_topic, off_scores)]
    chosen = calibrate_refusal(scored_in, scored_off, fraction, min_answered, lift)
    by_kind = {kind: np.array([s for row, s in zip(off_topic, off_scores) if row["kind"] == kind])
               for kind in OFF_TOPIC_KINDS}
    configured = retrieval.get("relevance_threshold")
    relevance = {
        "in_domain": _quantiles(np.array(in_scores)),
        **{f"off_topic_{kind}": _quantiles(scores) for kind, scores in by_kind.items()},
        "in_domain_questions": len(in_scores),
        "max_unknown_terms": max_unknown,
        "refused_by_unknown_terms": {"in_domain": sum(v == REFUSED_BY_TERMS for v in in_scores),
                                     **{kind: sum(v == REFUSED_BY_TERMS for row, v in zip(off_topic, off_scores)
                                                  if row["kind"] == kind) for kind in OFF_TOPIC_KINDS}},
        "in_domain_from_user_questions": user_selection,
        "off_topic_questions": {kind: int(len(scores)) for kind, scores in by_kind.items()},
        "chosen": chosen,
        "configured_threshold": configured,
    }
    if lift is not None:
        # the rule without lift, calibrated and reported on the same parts: what the lift adds
        alone = calibrate_refusal(scored_in, scored_off, fraction, min_answered)
        relevance["without_lift"] = {"threshold": alone["threshold"], "calibration": alone["calibration"],
                                     "reported": alone["reported"]}
        relevance["lift_quantiles"] = {
            "in_domain": _quantiles(np.array([lift[q] for q in in_domain_questions])),
            **{f"off_topic_{kind}": _quantiles(np.array([lift[row["question"]] for row in off_topic
                                                         if row["kind"] == kind])) for kind in OFF_TOPIC_KINDS}}
    configured_lift = retrieval.get("lift_threshold")
    if configured is not None or configured_lift is not None:
        inside, outside, in_lift, off_lift = calibration_part(scored_in, scored_off, fraction, False, lift)
        relevance["configured_reported"] = _rates(
            float(configured if configured is not None else chosen["threshold"]), inside, outside,
            configured_lift if configured_lift is not None else chosen["lift_threshold"], in_lift, off_lift)
        relevance["configured_lift_threshold"] = configured_lift
    logger.info("Refusal threshold %.3f (lift threshold %s) chosen on %d calibration questions; reported part: %s",
                chosen["threshold"], chosen["lift_threshold"], len(chosen["calibration_questions"]), chosen["reported"])
    return relevance


def _percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _threshold_text(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def refusal_markdown(relevance: dict) -> list[str]:
    """The refusal calibration as markdown lines: distributions, chosen thresholds, reported rates."""
    groups = [("in_domain", "in-domain"), ("off_topic_near", "off-topic, near"), ("off_topic_far", "off-topic, far")]
    quantiles = ("min", "p05", "p25", "median", "p75", "max")
    dist_rows = [[label, *(f"{relevance[key][q]:.3f}" for q in quantiles)] for key, label in groups if relevance.get(key)]
    dist = tabulate(dist_rows, headers=["relevance", *quantiles], tablefmt="github")
    chosen = relevance["chosen"]
    with_lift = bool(chosen.get("lift_scored"))
    lift_dist = []
    if with_lift and relevance.get("lift_quantiles"):
        rows = [[label, *(f"{relevance['lift_quantiles'][key][q]:.3f}" for q in quantiles)]
                for key, label in groups if relevance["lift_quantiles"].get(key)]
        lift_dist = ["", tabulate(rows, headers=["lift", *quantiles], tablefmt="github")]
    rows = []

    def rates(part: dict) -> list[str]:
        return [f"{_percent(part['in_domain_answered'])} of {part['in_domain_questions']}",
                *(f"{_percent(part[f'{kind}_refused'])} of {part[f'{kind}_questions']}" for kind in OFF_TOPIC_KINDS)]

    for label, part in (("calibration (chosen here)", chosen["calibration"]), ("reported (disjoint)", chosen["reported"])):
        rows.append([label, _threshold_text(chosen["threshold"]),
                     *([_threshold_text(chosen.get("lift_threshold"))] if with_lift else []), *rates(part)])
    if relevance.get("without_lift"):
        alone = relevance["without_lift"]
        rows.append(["reported, relevance alone (comparison)", _threshold_text(alone["threshold"]), "–",
                     *rates(alone["reported"])])
    configured, configured_lift = relevance.get("configured_threshold"), relevance.get("configured_lift_threshold")
    if relevance.get("configured_reported"):
        rows.append(["reported, configured override",
                     _threshold_text(configured if configured is not None else chosen["threshold"]),
                     *([_threshold_text(configured_lift if configured_lift is not None
                                        else chosen.get("lift_threshold"))] if with_lift else []),
                     *rates(relevance["configured_reported"])])
    table = tabulate(rows, headers=["part", "relevance threshold", *(["lift threshold"] if with_lift else []),
                                    "in-domain answered", "near off-topic refused", "far off-topic refused"],
                     tablefmt="github")
    in_use = (f"The assistant uses the configured `retrieval.relevance_threshold` {configured:.3f} (an override)."
              if configured is not None else
              f"The assistant reads the chosen threshold {chosen['threshold']:.3f} back from `retrieval_metrics`"
              " (`retrieval.relevance_threshold: null`).")
    if with_lift:
        lift = relevance.get("lift") or {}
        in_use += (
            " **Lift** (`kaggle_qa.context_lift`) is the mean log-probability gain of the question's tokens given the"
            f" retrieved context over no context, scored by the {lift.get('model', 'fine-tuned')} model"
            + (f" ({lift['compute_dtype']} compute, prompts of {lift['budget']} tokens)" if lift.get("budget") else "")
            + "; it was calibrated together with the relevance threshold ("
            + ("chosen: refuse below " + _threshold_text(chosen["lift_threshold"])
               if chosen.get("lift_threshold") is not None else "not chosen: it raised no balanced accuracy here")
            + ("; overridden by `retrieval.lift_threshold` " + _threshold_text(configured_lift)
               if configured_lift is not None else "")
            + ").")
    users = relevance.get("in_domain_from_user_questions", 0)
    terms = relevance.get("refused_by_unknown_terms")
    if relevance.get("max_unknown_terms") is not None and terms:
        in_use += (f" Both parts also apply the unknown-term rule (more than {relevance['max_unknown_terms']} word(s) the docs"
                   " never use and no common English word: refused at any threshold; it is counted in the distributions"
                   f" as {REFUSED_BY_TERMS:.0f}). It refused {terms['in_domain']} in-domain, {terms.get('near', 0)} near and"
                   f" {terms.get('far', 0)} far off-topic questions of all parts.")
    return [
        "### Refusal thresholds (best dense cosine of any chunk" + (", lift" if with_lift else "")
        + "), calibrated on this site",
        "",
        f"In-domain: {relevance['in_domain_questions']} questions (the test set's open questions"
        + (f" and {users} from the selection part of `user_questions`" if users else "") + "); off-topic: "
        + ", ".join(f"{n} {kind}" for kind, n in relevance["off_topic_questions"].items())
        + f". A hash of each question puts {chosen['calibration_fraction']:.0%} of them in the calibration part, where"
        + (" the pair of thresholds" if with_lift else " the threshold")
        + " with the best balanced accuracy (the mean of in-domain answered, near refused and far refused)"
        + (f" among those answering at least {chosen.get('min_in_domain_answered', 0):.0%} of the in-domain questions"
           if chosen.get("min_in_domain_answered") else "")
        + " is chosen; the rates below the line are measured on the other, disjoint part.",
        "",
        dist,
        *lift_dist,
        "",
        table,
        "",
        in_use,
        "",
    ]


def retrieval_markdown(result: dict) -> str:
    """The retrieval table and the threshold calibration as a markdown section."""
    rows = [[m, *(f"{result['methods'][m][f'hit@{k}']:.3f}" for k in CUTOFFS), f"{result['methods'][m]['mrr']:.3f}"]
            for m in METHODS]
    table = tabulate(rows, headers=["method", "hit@1", "hit@3", "hit@5", "MRR"], tablefmt="github")
    tasks = result["task_type_counts"]
    task_rows = [[t, n, *(f"{result['per_task_type'][m][t]['hit@1']:.3f}" for m in METHODS)] for t, n in tasks.items()]
    task_table = tabulate(task_rows, headers=["task type", "n", *(f"{m} hit@1" for m in METHODS)], tablefmt="github")
    return "\n".join([
        "## Retrieval: is the gold chunk found?",
        "",
        f"{result['questions']} {result['test_set']} questions over {result['chunks']} chunks; gold chunk = the chunk"
        f" each question was written from. Encoder `{result['encoder']}`, reciprocal-rank fusion k = {result['rrf_k']}."
        " With synthesis's retrieval round trip on (`synthesis.filters.round_trip_max_rank`, the default), generated"
        " open questions were kept only when search led back to their chunk, so these hit rates are higher than"
        " unfiltered questions would get; the user's own questions (`user_questions`, gold page cited) are the"
        " unbiased check.",
        "",
        table,
        "",
        f"Best by MRR: **{result['best_method']}** (configured `retrieval.method`: `{result['configured_method']}`).",
        "",
        task_table,
        "",
        *refusal_markdown(result["relevance"]),
    ])
