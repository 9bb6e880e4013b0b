"""Labelled claims for true/false, yes/no and NLI rows, made so that no surface cue tells the label.

From each claim sentence of a chunk, candidates of both labels are made with the same surface
operations, so that paraphrase marks, negation words, numbers and length occur on both sides:

- true: paraphrases (clause reordering, a dropped lead-in, parenthesis, trailing example or
  "which" clause, a lexical substitution from the docs' own vocabulary, "You can X" → "It is
  possible to X", "… in <domain>"), two facts of the chunk combined, and a one-clause,
  unquantified antonym edit negated (true again: "Your dataset will not be public by default");
- false: a negation flipped, a number swapped, an entity swapped (to a term the chunk uses
  elsewhere when it can), of the sentence or of one of its paraphrases, and a true fact
  combined with a false one;
- neutral (NLI): a fact of another chunk on a similar subject, alone or joined to a true fact.

:func:`balanced` then keeps, in every cue cell (negation word, number, length band, band of
ROUGE-L to the nearest context sentence, words the context never uses, a fixed-wording rewrite),
the same number of candidates of each label, so none of those cues tells the label; a claim is
never the context's sentence word for word.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass

from kaggle_qa.text import numbers

from ..audit import NEGATION, max_rouge_l, novel_words
from ..grammar import (
    DANGLING_REFERENCE,
    LEAD_IN,
    LEANS_ON_PREVIOUS,
    NUMBER,
    Vocabulary,
    balanced_parentheses,
    n_words,
    negate,
    tidy,
)
from ..near_duplicates import rouge_tokens

_REORDER_FRONT = re.compile(
    r"^(?P<w>If|When|Once|After|Before|While|Unless|Because|Since) (?P<cond>[^,]{4,90}), (?P<main>.{8,})\.$"
)
_REORDER_BACK = re.compile(
    r"^(?P<main>[A-Z][^,;:]{8,120}?) (?P<w>if|when|once|after|before|unless|because) (?P<cond>[^,;:]{4,90})\.$"
)
_TO_FRONT = re.compile(r"^To (?P<goal>[a-z][^,]{4,90}), (?P<main>[a-z].{8,})\.$", re.I)
_PARENTHESIS = re.compile(r"\s*\([^()]{1,80}\)")
# "like" only after a comma: "… what type of script you would like to create" is no example.
_TRAILING_EXAMPLE = re.compile(r"(?:,? (?:such as|for example|e\.g\.,?|including)|, like) [^,.;]{3,80}(?=\.$)")
_WHICH_CLAUSE = re.compile(r", (?:which|who) [^,]{3,80},")
_YOU_CAN = re.compile(r"^You can (?P<rest>[a-z].{5,})$")
_YOU_MODAL = re.compile(r"^You (?P<modal>can|may|will|must|should|need to) (?P<rest>[a-z][^`]{5,})$")
_CLAUSE_SPLIT = re.compile(r"^(?P<first>[A-Z][^;]{20,}?)(?:, and |, but |, so |; )(?P<second>[A-Za-z][^;]{20,})$")
_FILLER = re.compile(r" (?:also|simply|just|easily|currently|directly|then|now) (?=[a-z])")
_TRAILING_CLAUSE = re.compile(
    r"^(?P<main>[A-Z][^,;:]{25,}), (?:which|where|so that|such as|including|allowing|making|giving|as well as|"
    r"while|although|since|because|for example|e\.g\.|using|with|by|in order to)\b[^;:]{8,}\.$"
)
_SUBORDINATE_START = re.compile(r"^(?:If|When|Once|After|Before|While|Unless|Because|Since|Although|To|For|In|On|At)\b")
_IN_ORDER_TO = re.compile(r"\bin order to\b")
_QUANTIFIER = re.compile(r"\b(?:many|much|some|all|most|few|several|multiple|any|every|each|only|more|less)\b", re.I)
_IS_ABLE_TO = re.compile(r"\b(?:is|are) able to\b")
_HEDGED_NUMBER = re.compile(r"\b(?:up to|at least|at most|more than|less than|fewer than|over|under|about|around)\s*$", re.I)
_DANGLING = re.compile(rf"\b({DANGLING_REFERENCE})\b", re.I)
# Word pairs of the same meaning; a substitution is used only when the docs use the new word too.
# One-way rewrites of the same meaning (the reverse direction is often wrong: "make sure" →
# "create sure", "about" the preposition → "approximately"); used only when the docs use the new
# word too, never after "a"/"the" (the word is then a noun or adjective: "a select group").
SYNONYMS = (
    ("select", "choose"),
    ("begin", "start"),
    ("provides", "offers"),
    ("receive", "get"),
    ("modify", "change"),
    ("displays", "shows"),
    ("purchase", "buy"),
    ("additional", "extra"),
    ("approximately", "about"),
    ("assist", "help"),
    ("must", "have to"),
    ("enables", "allows"),
    ("locate", "find"),
    ("obtain", "get"),
    ("attempt", "try"),
    ("several", "multiple"),
    ("create", "make"),
    ("easy", "simple"),
    ("typically", "usually"),
    ("entire", "whole"),
    ("immediately", "right away"),
    ("important", "crucial"),
    ("many", "numerous"),
    ("includes", "contains"),
    ("uses", "utilizes"),
    ("large", "big"),
    ("various", "different"),
    ("quickly", "rapidly"),
    ("allows", "permits"),
    ("allow", "permit"),
    ("runs", "executes"),
)
# "… in <domain>." (the `domain` parameters' name): a paraphrase that brings in a word the chunk
# may not use, as other teachers' paraphrases do (the sentence must end in a plain word, not a
# quote, code or a parenthesis, and not name the domain already).
_PLAIN_END = re.compile(r"^(?P<body>[A-Z][^`\"“”()]{20,}[a-z])\.$")


@dataclass(frozen=True)
class Claim:
    """A statement about a chunk, its truth (None: the chunk neither says nor denies it), how it
    was made, and the chunk's sentence(s) that decide it (the answer's evidence)."""

    text: str
    truth: bool | None
    kind: str
    evidence: str


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower(vocab: Vocabulary, text: str) -> str:
    return vocab.lower_first(text)


def paraphrases(sentence: str, vocab: Vocabulary) -> list[tuple[str, str]]:
    """(text, operation) for every meaning-preserving rewrite that applies, the sentence excluded."""
    found = []
    if LEANS_ON_PREVIOUS.search(sentence):
        return []  # "So please make sure …", "And, due to …": no standalone claim to rephrase
    if match := _REORDER_FRONT.match(sentence):
        found.append((f"{_capital(match['main'])} {match['w'].lower()} {match['cond']}.", "reorder"))
    elif match := _REORDER_BACK.match(sentence):
        found.append((f"{match['w'].capitalize()} {match['cond']}, {_lower(vocab, match['main'])}.", "reorder"))
    if (match := _TO_FRONT.match(sentence)) and not match["main"].lower().startswith(("you ", "we ")):
        found.append((f"{_capital(match['main'])} to {match['goal']}.", "reorder"))
    if LEAD_IN.match(sentence):
        found.append((_capital(LEAD_IN.sub("", sentence)), "drop_lead_in"))
    for pattern, operation in (
        (_PARENTHESIS, "drop_parenthesis"),
        (_TRAILING_EXAMPLE, "drop_example"),
        (_WHICH_CLAUSE, "drop_clause"),
    ):
        shorter = tidy(pattern.sub("", sentence, count=1))
        if shorter != sentence and n_words(shorter) >= 5:
            found.append((shorter, operation))
    if match := _YOU_CAN.match(sentence):
        found.append((f"It is possible to {match['rest']}", "rephrase"))
    if (match := _YOU_MODAL.match(sentence)) and not re.search(r"\byou\b", match["rest"], re.I):
        rest = re.sub(r"\byour\b", "their", re.sub(r"\byourself\b", "themselves", match["rest"]))
        found.append((f"Users {match['modal']} {rest}", "rephrase"))
    if match := _CLAUSE_SPLIT.match(sentence):
        for part in (match["first"], match["second"]):
            part = _capital(part.rstrip(".,")) + "."
            if n_words(part) >= 6 and not _DANGLING.search(part) and not LEAD_IN.match(part):
                found.append((part, "split_clause"))
    if (match := _TRAILING_CLAUSE.match(sentence)) and not _SUBORDINATE_START.match(sentence):
        found.append((match["main"] + ".", "drop_trailing_clause"))
    if _FILLER.search(sentence):
        found.append((_FILLER.sub(" ", sentence, count=1), "drop_filler"))
    if _IN_ORDER_TO.search(sentence):
        found.append((_IN_ORDER_TO.sub("to", sentence, count=1), "rephrase"))
    if _IS_ABLE_TO.search(sentence):
        found.append((_IS_ABLE_TO.sub("can", sentence, count=1), "rephrase"))
    name = vocab.domain_name
    if name and (match := _PLAIN_END.match(sentence)) and not re.search(rf"\b{re.escape(name)}\b", sentence):
        found.append((f"{match['body']} in {name}.", "on_domain"))
    for old, new in SYNONYMS:
        match = re.search(rf"(?<!\ba )(?<!\bthe )\b{old}\b", sentence)
        if match and vocab.lower_counts[new.split()[0]] > 0:
            found.append((sentence[: match.start()] + new + sentence[match.end() :], "synonym"))
    unique = {}
    for text, operation in found:
        text = tidy(text)
        if text != sentence and text.endswith(".") and text not in unique:
            unique[text] = operation
    return list(unique.items())


def false_edits(
    sentence: str, vocab: Vocabulary, antonyms: list[list[str]], rng: random.Random, context: str = "",
    max_swaps_per_term: int = 2, max_swapped_terms: int = 2,
) -> list[tuple[str, str]]:
    """(text, edit) for every meaning-changing edit that applies: a flipped negation, a swapped
    number (not a hedged one: "up to 200 GB" also holds for 100), a swapped entity or antonym.

    A swap takes a term the `context` (the chunk) uses elsewhere when it can: a false statement
    whose every word is in the context cannot be told by a word the context never uses; a second
    one (up to `max_swaps_per_term`) takes a term the context never uses, since true paraphrases
    bring in new words too. Up to `max_swapped_terms` terms of the sentence are swapped, one per
    edit."""

    def picks(options: list[str]) -> list[str]:
        """A term the context uses, then (when there is one) a term it never uses: false
        statements with and without a new word, as true paraphrases come with and without one."""
        near = [o for o in options if _has_term(context, o)]
        far = [o for o in options if o not in near]
        return [rng.choice(side) for side in (near, far) if side][:max_swaps_per_term]

    edits = []
    number = NUMBER.search(sentence)
    if number and not _HEDGED_NUMBER.search(sentence[: number.start()]):
        pool = vocab.numbers if number.group(1) else vocab.number_words
        others = [n for n in pool if n != number.group(0) and n.isdigit() == number.group(0).isdigit()]
        for other in picks(others) if others else []:
            edits.append((sentence[: number.start()] + other + sentence[number.end() :], "number_swap"))
    swapped = 0
    for group in [*antonyms, *vocab.swap_groups]:
        match = next((m for t in group if (m := _has_term(sentence, t))), None)
        if match and _inside_name(sentence, match):
            continue
        others = [t for t in group if not _has_term(sentence, t)]
        if match and others and swapped < max_swapped_terms:  # never a term the sentence already has ("R or R")
            kind = "antonym_swap" if group in antonyms else "entity_swap"
            for other in picks(others):
                edits.append((sentence[: match.start()] + other + sentence[match.end() :], kind))
            swapped += 1
    if negated := negate(sentence):
        edits.append((negated, "negation"))
    return edits


def _has_term(text: str, term: str) -> re.Match | None:
    """Where `term` occurs in `text` as a whole word or phrase."""
    return re.search(rf"\b{re.escape(term)}\b", text)


def _inside_name(sentence: str, match: re.Match) -> bool:
    """Whether a matched term is part of a capitalised multi-word name ("Code Competitions",
    "Notebook Competitions"), where a swap makes nonsense ("Notebook Notebooks")."""
    before = sentence[: match.start()].split()
    after = sentence[match.end() :].split()
    return bool((before and before[-1][:1].isupper() and match.start() > 0) or (after and after[0][:1].isupper()))


def _combine(vocab: Vocabulary, first: str, second: str) -> str:
    return f"{first.rstrip('.')}, and {_lower(vocab, LEAD_IN.sub('', second))}"


_CLAUSE_BOUNDARY = re.compile(
    r"[,;:()]|\b(?:that|which|who|when|where|if|unless|because|and|or|but|while|before|after|until|once|since|"
    r"whether|so|than)\b",
    re.I,
)


def _first_difference(a: str, b: str) -> int:
    """Where the word at which `a` and `b` first differ starts."""
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a.rfind(" ", 0, at) + 1


def _negation_scopes_over(base: str, edited: str, negated: str, exclusive: frozenset[str]) -> bool:
    """Whether negating an antonym-swapped fact makes it true again: the swapped-in term is one
    of two exclusive states (`exclusive`: public/private, not upload/download, which are both
    possible; not before/after, a relation in time: "You cannot prepare the details after …"
    does not follow from "… before …"), and the negation lands right before it (at most two
    words apart: "is not a free service", not "will not score the submission using the visible file",
    which denies the scoring), in the first clause, with no quantifier ahead ("There are not
    many resources offline" does not follow from "many … online")."""
    swap_at = _first_difference(edited, base)
    term = re.match(r"[\w-]+", edited[swap_at:])
    if not term or term.group(0).lower() not in exclusive:
        return False
    not_at = _first_difference(edited, negated)
    ahead = edited[:swap_at]
    return (
        not_at <= swap_at  # (in the edited text, "not" goes in before the word at not_at)
        and not _CLAUSE_BOUNDARY.search(edited[:not_at])  # the first clause's own verb ...
        and not _CLAUSE_BOUNDARY.search(edited[not_at:swap_at])  # ... with the swapped term in its scope
        and len(negated[not_at:].split()) - len(edited[swap_at:].split()) <= 4  # "is not" + at most two words
        and not _QUANTIFIER.search(ahead)
    )


def _composed(sentence: str, variants: list[tuple[str, str]], vocab: Vocabulary, limit: int) -> list[tuple[str, str]]:
    """Two different rewrites in a row ("reorder+drop_filler"), at most `limit` of them: true
    claims further from the context's wording, as another teacher's paraphrases are."""
    seen = {sentence, *(text for text, _ in variants)}
    found = []
    for text, operation in variants:
        for twice, second in paraphrases(text, vocab):
            if second != operation and twice not in seen and len(found) < limit:
                seen.add(twice)
                found.append((twice, f"{operation}+{second}"))
    return found


def chunk_claims(
    statements: list[str], others: list[str], vocab: Vocabulary, antonyms: list[list[str]], rng: random.Random,
    context: str = "", max_composed: int = 3, max_combined: int = 6, max_combined_neutral: int = 1,
    exclusive: frozenset[str] = frozenset(),
) -> list[Claim]:
    """Every candidate claim about one chunk, from its claim sentences (`statements`) and
    sentences of other chunks on a similar subject (`others`, for neutral claims).

    `exclusive`: antonyms of which a thing is one or the other ("public"/"private"): a false
    swap to one of them, negated, is true again ("Notebooks are not public by default")."""
    claims = []
    for sentence in statements:
        variants = [(sentence, "original"), *paraphrases(sentence, vocab)]
        for text, operation in [*variants[1:], *_composed(sentence, variants[1:], vocab, max_composed)]:
            claims.append(Claim(text, True, f"paraphrase:{operation}", sentence))
        for base, operation in variants:
            for edited, edit in false_edits(base, vocab, antonyms, rng, context):
                suffix = "" if operation == "original" else f"+{operation}"
                claims.append(Claim(edited, False, f"{edit}{suffix}", sentence))
                # Negating an edited fact makes it true again only when the negation scopes over
                # the edit (see _negation_scopes_over): "Your dataset will not be public by default".
                negatable = edit == "antonym_swap" and not NEGATION.search(edited)
                double = negate(edited) if negatable else None
                if double and double != base and _negation_scopes_over(base, edited, double, exclusive):
                    claims.append(Claim(double, True, f"negated_{edit}{suffix}", sentence))
    # Adjacent sentences first (they share a subject more often); no list items ("Datasets
    # Twitter: The new account …"), which read as junk when joined.
    n = len(statements)
    pairs = [
        (first, second)
        for gap in range(1, n) for first, second in zip(statements, statements[gap:])
        if n_words(first) + n_words(second) <= 40 and ":" not in first + second
    ]
    for first, second in pairs[:max_combined]:
        claims.append(Claim(_combine(vocab, first, second), True, "combined", f"{first} {second}"))
        edits = false_edits(second, vocab, antonyms, rng, context)
        if edits:
            edited, edit = rng.choice(edits)
            claims.append(Claim(_combine(vocab, first, edited), False, f"combined+{edit}", f"{first} {second}"))
    for other in others:
        claims.append(Claim(other, None, "other_chunk", statements[0] if statements else other))
        # Joined to true facts of the chunk: neutral hypotheses as close to the context's wording
        # as the combined true and false ones (a neutral one is otherwise told by its distance).
        for sentence in rng.sample(statements, min(len(statements), max_combined_neutral)):
            if n_words(sentence) + n_words(other) <= 40:
                claims.append(Claim(_combine(vocab, sentence, other), None, "combined+other_chunk", sentence))
    # no dangling reference, and no parenthesis a rewrite cut in half ("… data files), we recommend …")
    return [c for c in claims if not _DANGLING.search(c.text) and balanced_parentheses(c.text)]


def _operations(kind: str) -> list[str]:
    """The operations a claim's kind names ("entity_swap+reorder" → entity_swap, reorder)."""
    return re.split(r"[+:]", kind)


def excluded_kind(kind: str, excluded: list[str] | None) -> bool:
    """Whether a claim's kind ("entity_swap+reorder", "paraphrase:synonym") has an operation of
    `excluded` (the offline teacher's `exclude_claim_kinds`)."""
    return bool(excluded) and any(part in excluded for part in _operations(kind))


# Rewrites that bring in the same words every time ("… in <domain>.", "Users can …", "It is
# possible to …"): which of them a claim went through is part of its cue cell, so those words
# occur as often in true as in false claims (a bag-of-words model cannot learn "in <domain>" = true).
WORDED_OPERATIONS = ("on_domain", "rephrase")


def worded_operation(kind: str) -> str | None:
    """The fixed-wording rewrite a claim went through (see WORDED_OPERATIONS), if any."""
    return next((op for op in WORDED_OPERATIONS if op in _operations(kind)), None)


def similar_sentences(chunk_text: str, pool: list[tuple[str, str]], chunk_url: str, k: int) -> list[str]:
    """The `k` sentences of other pages that share the most content words with this chunk."""
    words = set(rouge_tokens(chunk_text))
    scored = sorted(
        ((len(words & set(rouge_tokens(sentence))), sentence) for url, sentence in pool if url != chunk_url),
        key=lambda item: -item[0],
    )
    return [sentence for score, sentence in scored[:k] if score >= 2]


def cue_cell(text: str, context: str, novel: bool = True) -> tuple:
    """The cues a no-reading model could use: word for word in the context, words the context
    never uses (none, one, more), negation word, number, length band, ROUGE-L band (the audit's
    baselines, see ..audit).

    `novel=False` leaves the words-the-context-never-uses flag out (NLI: a neutral hypothesis
    is one the context does not speak to, so its unsupported words are what the label means;
    balancing them would leave almost no NLI rows)."""
    length = n_words(text)
    band = next(i for i, bound in enumerate((12, 20, 10**6)) if length < bound)
    verbatim = " ".join(rouge_tokens(text)) in " ".join(rouge_tokens(context))
    new_words = min(novel_words(text, context), 2) if novel else None
    # ROUGE-L last and unbanded: `balanced` matches it within a tolerance
    return (verbatim, new_words, bool(NEGATION.search(text)), bool(numbers(text)), band, max_rouge_l(text, context))


def balanced(items: list[tuple], labels: tuple[str, ...], rng: random.Random, tolerance: float = 0.01) -> list[tuple]:
    """Groups of items (label, cell, payload), one item of each label from the same cue cell,
    in a seeded random order: any prefix of the groups is label-balanced in every cell.

    A cell's last element is a continuous cue (ROUGE-L to the nearest context sentence): the
    items of a group lie within `tolerance` of each other on it. Bands are not enough: a
    one-word swap (~0.93) and a dropped filler word (~0.96) share any band a data set can afford,
    and a threshold inside it tells them apart (seen: 0.59 with bands of 0.05, 0.557 with a
    tolerance of 0.02; 0.01 passes the audit on the bundled docs))."""
    cells: dict[tuple, list] = defaultdict(list)
    for item in items:
        cells[item[1][:-1]].append(item)
    groups = []
    for cell in sorted(cells, key=repr):
        shuffled = rng.sample(cells[cell], len(cells[cell]))
        waiting: dict[str, list] = {label: [] for label in labels}
        for item in sorted(shuffled, key=lambda it: it[1][-1]):  # stable: ties keep the seeded order
            value = item[1][-1]
            for label in labels:
                waiting[label] = [it for it in waiting[label] if it[1][-1] >= value - tolerance]
            waiting[item[0]].append(item)
            if all(waiting[label] for label in labels):
                groups.append(tuple(waiting[label].pop(0) for label in labels))
    rng.shuffle(groups)
    return groups
