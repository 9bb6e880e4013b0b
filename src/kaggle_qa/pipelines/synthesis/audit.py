"""Shortcut audit: can a labelled item be answered without reading its context?

For every labelled task type (true/false, yes/no, NLI) of a dataset, cheap "no-reading"
baselines are fitted on the labels with stratified k-fold cross-validation (scikit-learn) and
their held-out accuracy is compared with the majority-class rate. Each baseline sees one cue:

- ``verbatim``: the statement occurs word for word in the context;
- ``rouge_l``: the statement's best ROUGE-L F to a context sentence, above a learnt cut;
- ``novel_words``: how many of the statement's content words the context never uses (a
  generator whose true statements copy the context's words and whose false ones bring in a new
  word, an antonym or another entity, teaches "a new word means false": a model that learns it
  answers "False" to every paraphrase another teacher writes);
- ``negation``: the statement holds a negation word; ``number``: it holds a number;
- ``length``: the statement's length in words, above or below a learnt threshold;
- ``bag_of_words``: logistic regression on the words of the question alone;
- ``template``: the question's opening words (its template) alone.

A cue that carries the label lets a model score without learning the docs (the
annotation-artifact problem: hypothesis-only baselines reach ~67 % on SNLI). A baseline more
than ``max_gain`` above the majority rate fails the audit, for task types with at least
``min_rows`` labelled rows (smaller sets are reported, not judged: below 100 rows the standard
error of an accuracy near 0.5 is 0.05 or more, the bound itself).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
from rouge_score.rouge_scorer import _score_lcs
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from kaggle_qa.qa_schema import first_word, infer_task_type
from kaggle_qa.text import numbers, split_sentences

from .near_duplicates import rouge_tokens

LABELS = {
    "true_false": ("true", "false"),
    "yes_no": ("yes", "no"),
    "nli": ("entailment", "contradiction", "neutral"),
}
BASELINES = ("verbatim", "rouge_l", "novel_words", "negation", "number", "length", "bag_of_words", "template")
NEGATION = re.compile(r"\b(not|no|never|cannot|none|nothing|neither|nor|without)\b|n[’']t\b", re.I)
_QUOTED = re.compile(r"[\"“]([^\"”]{12,})[\"”]")
_PREFIX = re.compile(
    r"^(?:true or false|true/false|t/f|is the following statement true or false|hypothesis|claim|statement|"
    r"state whether the following is true or false|assess the statement|"
    r"indicate whether the following statement is true or false)\s*[:?]\s*|"
    r"^is it (?:true or false|true|accurate to say) that\s+",
    re.I,
)
_SUFFIX = re.compile(r"\s*\((?:true/false|true or false)\)\s*$", re.I)
# An answer that opens with a label ("True.", "Neutral.", or the label alone): a labelled task's form.
_LABEL_START = re.compile(r"^\W*(?:true|false|yes|no|entailment|contradiction|neutral)\s*(?:[.!]|$)", re.I)


def open_answer_phrases(synthesis: dict) -> list[str]:
    """Phrases of the label templates that must never appear in an open answer: the offline
    teacher's neutral explanation and the audit's ``label_phrases``."""
    return [synthesis["offline"]["neutral_explanation"], *synthesis["audit"].get("label_phrases", [])]


def label_phrase(answer: str, phrases: list[str] | tuple[str, ...]) -> str | None:
    """The label form an open answer carries, or None: a leading label ("Neutral. …") or one of
    the label templates' `phrases` (case-insensitive)."""
    if match := _LABEL_START.match(answer):
        return match.group(0).strip()
    lowered = answer.lower()
    return next((phrase for phrase in phrases if phrase.lower().rstrip(".") in lowered), None)


def open_answer_audit(rows: list[dict], phrases: list[str] | tuple[str, ...]) -> dict:
    """Open (extractive) answers that are no complete answer: ending in ":" (a lead-in without
    what it introduces) or carrying a label template's phrase; both must be 0. Also their length."""
    answers = [row["output"] for row in rows if infer_task_type(row) == "extractive_qa"]
    words = np.array([len(a.split()) for a in answers]) if answers else np.zeros(1)
    colon = [a for a in answers if a.rstrip().endswith(":")]
    labelled = [a for a in answers if label_phrase(a, phrases)]
    return {
        "rows": len(answers),
        "ending_with_colon": len(colon),
        "label_phrases": len(labelled),
        "multi_line": sum("\n" in a for a in answers),
        "words_mean": round(float(words.mean()), 1),
        "words_p95": round(float(np.percentile(words, 95)), 1),
        "examples": [a[:200] for a in (colon + labelled)[:3]],
    }


def label_of(row: dict) -> str:
    """The row's label: its own ``label`` key, else its answer's first word."""
    return row.get("label") or first_word(row["output"])


def statement_of(instruction: str) -> str:
    """The claim a labelled question asks about, without its template ("True or False: X" → X,
    'Hypothesis: "X" Entailment, …?' → X); a yes/no question is its own statement."""
    quoted = _QUOTED.search(instruction)
    # an NLI question's quoted hypothesis, not a quoted button label inside a statement
    if quoted and re.search(r"entail|contradict|neutral|hypothesis", instruction, re.I):
        return quoted.group(1).strip()
    text = instruction.strip()
    while (match := _PREFIX.match(text)) and match.end() < len(text):
        text = text[match.end() :]
    text = re.sub(r"^according to (?:the )?(?:[\w’'.-]+ ){0,4}(?:docs|documentation),\s*", "", text, flags=re.I)
    return _SUFFIX.sub("", text).strip().rstrip("?").strip()


def template_of(instruction: str) -> str:
    """A question's template as a no-reading model sees it: its first three words, lower case."""
    return " ".join(re.findall(r"[a-z']+|[:?]", instruction.lower())[:3])


def _normal(text: str) -> str:
    return " ".join(rouge_tokens(text))


def max_rouge_l(statement: str, context: str) -> float:
    """ROUGE-L F of the statement against its most similar context sentence."""
    tokens = rouge_tokens(statement)
    scores = [_score_lcs(rouge_tokens(s), tokens).fmeasure for s in split_sentences(context)]
    return max(scores, default=0.0)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def novel_words(statement: str, context: str) -> int:
    """How many content words of the statement (stop words aside, plural -s ignored) the
    context does not use."""
    seen = {_stem(w) for w in rouge_tokens(context)}
    return sum(_stem(w) not in seen for w in rouge_tokens(statement) if w not in ENGLISH_STOP_WORDS)


def features(rows: list[dict]) -> dict[str, list]:
    """Each baseline's input, one value per row."""
    statements = [statement_of(row["instruction"]) for row in rows]
    return {
        "verbatim": [[float(_normal(s) in _normal(r["input"]))] for s, r in zip(statements, rows)],
        "rouge_l": [[max_rouge_l(s, r["input"])] for s, r in zip(statements, rows)],
        "novel_words": [[float(novel_words(s, r["input"]))] for s, r in zip(statements, rows)],
        "negation": [[float(bool(NEGATION.search(s)))] for s in statements],
        "number": [[float(bool(numbers(s)))] for s in statements],
        "length": [[float(len(s.split()))] for s in statements],
        "bag_of_words": [row["instruction"] for row in rows],
        "template": [[template_of(row["instruction"])] for row in rows],
    }


def _model(baseline: str, n_rows: int):
    if baseline == "bag_of_words":  # words seen in two questions at least, once a set has 50 rows
        return make_pipeline(
            CountVectorizer(lowercase=True, ngram_range=(1, 2), min_df=2 if n_rows >= 50 else 1, binary=True),
            LogisticRegression(max_iter=2000, C=1.0),
        )
    if baseline == "template":
        return make_pipeline(OneHotEncoder(handle_unknown="ignore"), DecisionTreeClassifier(random_state=0))
    return DecisionTreeClassifier(max_depth=1, random_state=0)  # one learnt threshold


def audit_task(rows: list[dict], task: str, audit: dict, seed: int) -> dict:
    """Majority rate and cross-validated baseline accuracies for one task type's rows."""
    labelled = [row for row in rows if label_of(row) in LABELS[task]]
    labels = np.array([label_of(row) for row in labelled])
    counts = Counter(labels.tolist())
    result = {
        "rows": len(labelled),
        "unlabelled_rows": len(rows) - len(labelled),
        "labels": dict(sorted(counts.items())),
        "majority": round(max(counts.values()) / len(labelled), 4) if labelled else None,
        "baselines": {},
    }
    folds = min(audit["folds"], min(counts.values()) if counts else 0)
    if len(counts) < 2 or folds < 2:
        result["judged"] = False
        return result
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=audit["repeats"], random_state=seed)
    for baseline, values in features(labelled).items():
        scores = cross_val_score(_model(baseline, len(labelled)), values, labels, cv=splitter, scoring="accuracy")
        result["baselines"][baseline] = round(float(scores.mean()), 4)
    result["judged"] = len(labelled) >= audit["min_rows"]
    worst = max(result["baselines"], key=result["baselines"].get)
    result["worst"] = worst
    result["gain"] = round(result["baselines"][worst] - result["majority"], 4)
    result["failing"] = sorted(
        b for b, acc in result["baselines"].items() if result["judged"] and acc - result["majority"] > audit["max_gain"]
    )
    return result


def audit_version(rows: list[dict], audit: dict, seed: int, label_phrases: list[str] | tuple[str, ...] = ()) -> dict:
    """The audit of every labelled task type of one dataset and of its open answers, and whether
    it passes (no shortcut baseline above the bound, no open answer ending in ":" or carrying a
    label phrase)."""
    by_task = {task: [r for r in rows if infer_task_type(r) == task] for task in LABELS}
    tasks = {task: audit_task(task_rows, task, audit, seed) for task, task_rows in by_task.items() if task_rows}
    failing = [f"{task}: {b}" for task, result in tasks.items() for b in result.get("failing", [])]
    open_answers = open_answer_audit(rows, label_phrases)
    failing += [f"open answers: {n} {what}" for what, n in (("ending with ':'", open_answers["ending_with_colon"]),
                                                            ("with a label phrase", open_answers["label_phrases"])) if n]
    return {"tasks": tasks, "open_answers": open_answers, "passes": not failing, "failing": failing}


def shortcut_audit(
    versions: dict[str, list[dict]], audit: dict, seed: int, label_phrases: list[str] | tuple[str, ...] = ()
) -> dict:
    """The audit of every version (ours and the published ones, for comparison)."""
    return {
        "max_gain": audit["max_gain"],
        "min_rows": audit["min_rows"],
        "folds": audit["folds"],
        "repeats": audit["repeats"],
        "versions": {name: audit_version(rows, audit, seed, label_phrases) for name, rows in versions.items()},
    }


def audit_markdown(record: dict) -> list[str]:
    """The audit as a markdown section: one table row per version and task type."""
    lines = [
        "## Shortcut audit (no-reading baselines)",
        "",
        f"Held-out accuracy ({record['folds']}-fold cross-validation, repeated {record['repeats']} times) of baselines that never read the "
        f"context, on each labelled task type, against the majority-class rate. A baseline more than "
        f"{record['max_gain']:.2f} above the majority fails (judged from {record['min_rows']} labelled rows "
        "up; fewer are shown, not judged). Baselines: statement verbatim in the context, its best ROUGE-L "
        "to a context sentence above a learnt cut, how many of its content words the context never uses "
        "(learnt threshold), a negation word, a number, its length (learnt "
        "threshold), bag-of-words logistic regression on the question, the question's template.",
        "",
        "| version | task | rows | majority | " + " | ".join(BASELINES) + " | verdict |",
        "|---|---|---|---|" + "---|" * len(BASELINES) + "---|",
    ]
    for name, version in record["versions"].items():
        for task, result in version["tasks"].items():
            cells = [f"{result['baselines'][b]:.2f}" if b in result["baselines"] else "–" for b in BASELINES]
            cells = [f"**{c}**" if b in result.get("failing", []) else c for b, c in zip(BASELINES, cells)]
            if not result.get("judged"):
                verdict = "not judged (too few rows)"
            else:
                verdict = "FAILS" if result["failing"] else "passes"
            majority = f"{result['majority']:.2f}" if result["majority"] is not None else "–"
            lines.append(f"| {name} | {task} | {result['rows']} | {majority} | " + " | ".join(cells) + f" | {verdict} |")
    lines += [
        "",
        "Open answers: a complete answer never ends in \":\" (a lead-in without the list, command or "
        "table it introduces) and never carries a label template's phrase; both counts must be 0.",
        "",
        "| version | open answers | ending with \":\" | with a label phrase | multi-line | words mean | words p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, version in record["versions"].items():
        if (o := version.get("open_answers")) is not None:
            lines.append(f"| {name} | {o['rows']} | {o['ending_with_colon']} | {o['label_phrases']} | {o['multi_line']} | "
                         f"{o['words_mean']} | {o['words_p95']} |")
    failing = [name for name, version in record["versions"].items() if not version["passes"]]
    lines += ["", f"Versions failing the audit: {', '.join(failing)}" if failing else "Every version passes.", ""]
    return lines
