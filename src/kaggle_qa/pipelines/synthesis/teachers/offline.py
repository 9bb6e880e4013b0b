"""The offline teacher: question-answer pairs from a chunk alone, deterministic under a seed.

Every answer is built from the chunk's own sentences, so it is supported by the input:
- extractive QA: a question a reader would ask of one sentence ("To X, Y." → "How do I X?",
  "X is a Y." → "What is X?", an FAQ question followed by its answer, the section's topic);
  the answer is the sentence itself, copied.
- true/false, yes/no and NLI: true statements are sentences of the chunk; false ones are
  meaning-changing edits, labelled in the row's ``edit`` key: a negation, or a number or
  entity swapped for another that occurs elsewhere in the docs. The answer states the label,
  then the chunk's true sentence.
Task types follow the recipe's mix by always serving the type furthest below its share.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from tqdm.auto import tqdm

from ..grammar import (
    AUX_QUESTION,
    BECAUSE,
    CAPABILITY,
    CLAUSE_START,
    DEFINITION,
    HOW_MANY,
    IF_COND,
    IMPERATIVE,
    IMPERATIVE_START,
    LEAD_IN,
    NAMED_ITEM,
    NEED_TO,
    NUMBER,
    OBJECTS,
    ONCE,
    PRONOUN_START,
    RECOMMEND,
    SUBJECT_BAN,
    TO_GOAL,
    TRAILING_ADVERB,
    USE_TO,
    Vocabulary,
    WHERE,
    WHO_CAN,
    WORD,
    YOU_CAN,
    as_sentence,
    base_form,
    n_words,
    negate,
    split_sentences,
    tidy,
    to_first_person,
)
from ..near_duplicates import RougeIndex


class OfflineTeacher:
    """Builds QA rows for one version's recipe from chunks; no network, seeded."""

    def __init__(self, all_chunks: list[dict], offline_params: dict, seed: int):
        self.params = offline_params
        self.seed = seed
        self.vocab = Vocabulary.from_chunks(all_chunks, offline_params["swap_groups"])
        self.distractors = [
            (chunk["url"], sentence)
            for chunk in all_chunks
            for sentence in map(as_sentence, split_sentences(chunk["text"]))
            if self._is_statement(sentence)
        ]
        self._asked = RougeIndex(offline_params["avoid_similar_questions_rouge_l"])

    def _pick(self, templates: list[str], rng: random.Random, **fields: str) -> str:
        """A template filled in, preferring a wording unlike the questions asked so far (a varied
        dataset, and fewer rows lost to the near-duplicate filter)."""
        options = [template.format(**fields) for template in rng.sample(templates, len(templates))]
        return next((option for option in options if not self._asked.is_near_duplicate(option)[0]), options[0])

    # ---------------------------------------------------------------- sentences and edits
    def _is_statement(self, sentence: str) -> bool:
        bounds = self.params["statement_words"]
        return (
            sentence.endswith(".")
            and (sentence[0].isupper() or sentence[0] in '`“"')
            and bounds["min"] <= n_words(sentence) <= bounds["max"]
            and "http" not in sentence
            and "<" not in sentence
            and not sentence.rstrip(".").endswith(":")
            and not any(phrase in sentence.lower() for phrase in self.params["vague_phrases"])
        )

    def _is_claim(self, sentence: str) -> bool:
        """A statement that can be true or false (not an instruction to the reader, nor an
        example that only makes sense next to what it illustrates)."""
        return (
            self._is_statement(sentence)
            and not IMPERATIVE_START.match(sentence)
            and not re.match(r"(For example|For instance|E\.g\.)", sentence)
        )

    def false_edit(self, sentence: str, rng: random.Random) -> tuple[str, str] | None:
        """A meaning-changing edit of a true sentence and its kind, or None when none applies."""
        edits = []
        number = NUMBER.search(sentence)
        if number:
            pool = self.vocab.numbers if number.group(1) else self.vocab.number_words
            others = [n for n in pool if n != number.group(0) and n.isdigit() == number.group(0).isdigit()]
            if others:
                edits.append(
                    ("number_swap", sentence[: number.start()] + rng.choice(others) + sentence[number.end() :])
                )
        for group in self.vocab.swap_groups:
            for term in group:
                match = re.search(rf"\b{re.escape(term)}\b", sentence)
                others = [t for t in group if not re.search(rf"\b{re.escape(t)}\b", sentence)]
                if match and others:  # never a term the sentence already has ("R or R")
                    other = rng.choice(others)
                    edits.append(("entity_swap", sentence[: match.start()] + other + sentence[match.end() :]))
                    break
        negated = negate(sentence)
        if negated:
            edits.append(("negation", negated))
        return rng.choice(edits) if edits else None


    # ---------------------------------------------------------------- question forms
    def _subject(self, subject: str) -> str | None:
        subject = TRAILING_ADVERB.sub("", subject)
        if SUBJECT_BAN.search(subject):
            return None
        if any(p.match(subject) for p in (PRONOUN_START, CLAUSE_START, IMPERATIVE_START)):
            return None
        if n_words(subject) > self.params["max_subject_words"]:
            return None
        if subject in ("You", "Your"):
            return {"You": "I", "Your": "my"}[subject]
        return self.vocab.lower_first(to_first_person(subject))

    def yes_no_question(self, sentence: str) -> tuple[str, bool] | None:
        """("Can I …?", answer_is_yes) by moving the auxiliary verb to the front."""
        match = AUX_QUESTION.match(sentence)
        if (
            not match
            or n_words(sentence) > self.params["max_yes_no_words"]
            or re.search(r"[:;]|, (and|whereas|but) ", sentence)
        ):
            return None
        subject = self._subject(match["subj"])
        if subject is None:
            return None
        aux, rest = match["aux"], to_first_person(match["rest"])
        negative = bool(match["neg"]) or aux in ("cannot", "can't", "isn't", "aren't", "won't")
        aux = {"cannot": "can", "can't": "can", "isn't": "is", "aren't": "are", "won't": "will"}.get(aux, aux)
        if aux in ("has", "have") and not negative and not re.match(r"(been|already|not)\b", rest):
            aux, rest = ("does" if aux == "has" else "do"), f"have {rest}"
        if subject == "I" and aux == "are":
            aux = "am"
        return f"{aux.capitalize()} {subject} {rest}?", not negative

    def extractive_questions(self, sentence: str, rng: random.Random) -> list[str]:
        """Natural questions whose answer is this sentence: a pattern's, then one about its subject
        (both asked of the main clause, after a lead-in such as "However, ")."""
        clause = LEAD_IN.sub("", sentence)
        clause = clause[0].upper() + clause[1:]
        questions = []
        for question in (self._wh_question(clause, rng), self._subject_question(clause, rng)):
            if question and question.count("(") == question.count(")"):
                question = tidy(TRAILING_ADVERB.sub("", question[:-1]) + "?") if question.endswith("?") else question
                if question not in questions:
                    questions.append(question)
        return questions

    def _wh_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := TO_GOAL.match(sentence) or USE_TO.match(sentence):
            return f"How do I {to_first_person(match['goal'])}?"
        if match := NAMED_ITEM.match(sentence):
            name = match["name"]
            return f"What {'are' if name.endswith('s') else 'is'} {name}?"
        if (match := WHERE.match(sentence)) and (subject := self._subject(match["subj"])):
            return f"Where can I find {subject}?"
        if match := RECOMMEND.match(sentence):
            return f"What does Kaggle recommend {match['when']} {to_first_person(match['cond'])}?"
        if match := IF_COND.match(sentence):
            lead = "What should I do if" if IMPERATIVE.match(match["rest"]) else "What happens if"
            return f"{lead} {to_first_person(match['cond'])}?"
        if match := ONCE.match(sentence):
            return f"What happens {match['when'].lower()} {to_first_person(match['cond'])}?"
        if match := NEED_TO.match(sentence):
            return f"What do I need to do {match['purpose']} {to_first_person(match['goal'])}?"
        if match := YOU_CAN.match(sentence):
            lead = "How can I" if match["how"] in ("by", "using", "with", "via", "through") else "Where can I"
            act = re.sub(r"^(also|then|even|simply|easily|always|now|still) ", "", match["act"])
            return f"{lead} {to_first_person(TRAILING_ADVERB.sub('', act))}?"
        if match := WHO_CAN.match(sentence):
            return f"Who {match['modal']} {to_first_person(match['act'])}?"
        if match := HOW_MANY.match(sentence):
            return f"How many {match['what']} are there?"
        if (match := BECAUSE.match(sentence)) and (inverted := self.yes_no_question(match["main"] + ".")):
            return f"Why {self.vocab.lower_first(inverted[0])}"
        if question := self._pattern_question(sentence, rng):
            return question
        if match := DEFINITION.match(sentence):
            subject = self._subject(match["subj"])
            if subject:
                purpose = re.match(r"(designed|used|intended|meant) (to|for)\b", match["rest"])
                if purpose:
                    tail = "to do" if purpose[2] == "to" else "for"
                    return f"What {match['be']} {subject} {purpose[1]} {tail}?"
                templates = ["What {be} {subject}?", "Can you explain what {subject} {be}?"]
                return self._pick(templates, rng, be=match["be"], subject=subject)
        return None

    def _subject_question(self, sentence: str, rng: random.Random) -> str | None:
        """Fallback: ask about the sentence's subject ("What should I know about the docstring?")."""
        match = AUX_QUESTION.match(sentence) or CAPABILITY.match(sentence)
        subject = self._subject(match["subj"]) if match else None
        if subject is None or subject in ("I", "my") or n_words(subject) < 2:
            return None
        return self._pick(self.params["subject_templates"], rng, subject=subject)

    def _pattern_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := CAPABILITY.match(sentence):
            subject = self._subject(match["subj"])
            if subject:
                verb = match["verb"]
                do = "does" if verb.endswith("s") and subject not in ("I",) else "do"
                lemma = base_form(verb) if verb.endswith("s") else verb
                first = match["rest"].split()[0].lower()
                if lemma in ("allow", "let", "enable", "help") and first in OBJECTS:
                    who = "me" if first == "you" else first
                    to = " to" if lemma in ("allow", "enable") else ""
                    return f"What {do} {subject} {lemma} {who}{to} do?"
                if lemma not in ("allow", "let", "enable", "help"):
                    return f"What {do} {subject} {lemma}?"
        return None

    def topic_question(self, chunk: dict, rng: random.Random) -> str | None:
        """A question about the chunk's section, asked the way a newcomer would."""
        if not chunk.get("heading_path"):
            return None
        heading = tidy(chunk["heading_path"][-1])
        if heading.endswith("?"):
            return heading
        topic = self.vocab.lower_title(heading)
        if n_words(topic) < 2:
            return None
        if IMPERATIVE_START.match(heading):
            return f"How do I {to_first_person(topic)}?"
        if topic.split()[0].endswith("ing"):
            return self._pick(self.params["activity_templates"], rng, topic=topic)
        return self._pick(self.params["topic_templates"], rng, topic=topic)

    @staticmethod
    def topic_answer(chunk: dict, statements: list[str]) -> str | None:
        """The chunk's first statement that names the section's topic (a word of its heading)."""
        if not chunk.get("heading_path"):
            return None
        stems = {w.lower()[:5] for w in WORD.findall(chunk["heading_path"][-1]) if len(w) >= 4}
        for sentence in statements:
            shared = stems & {w.lower()[:5] for w in WORD.findall(sentence)}
            if len(shared) >= min(2, len(stems)) and shared and not PRONOUN_START.match(sentence):
                return sentence
        return None

    # ---------------------------------------------------------------- rows
    def generate(self, chunks: list[dict], recipe: dict, version: str) -> list[dict]:
        """Rows for every chunk of one version, following the recipe's task mix and shares."""
        mix = {task: share for task, share in recipe["task_mix"].items() if share > 0}
        counts, label_counts = Counter(), Counter()
        self._asked = RougeIndex(self.params["avoid_similar_questions_rouge_l"])
        rows = []
        for chunk in tqdm(chunks, desc=f"offline teacher {version}", unit="chunk"):
            rng = random.Random(f"{self.seed}:{version}:{chunk['chunk_id']}")
            rows += self._chunk_rows(chunk, recipe, version, mix, counts, label_counts, rng)
        return rows

    def _chunk_rows(self, chunk, recipe, version, mix, counts, label_counts, rng) -> list[dict]:
        sentences = [as_sentence(s) for s in split_sentences(chunk["text"])]
        rows: list[dict] = []
        questions_seen: set[str] = set()

        def emit(task: str, instruction: str, answer: str, extra: dict) -> None:
            if len(rows) < recipe["pairs_per_chunk"] and instruction not in questions_seen:
                questions_seen.add(instruction)
                self._asked.add(instruction)
                rows.append(self._row(chunk, recipe, task, instruction, answer, rng, extra))
                counts[task] += 1
                if "label" in extra:
                    label_counts[(task, extra["label"])] += 1

        if "extractive_qa" in mix:
            # FAQ-style chunks already hold a question and its answer.
            for question, answer in zip(sentences, sentences[1:]):
                if question.endswith("?") and n_words(question) >= 4 and self._is_statement(answer):
                    emit("extractive_qa", question, answer, {})
        statements = [s for s in sentences if self._is_statement(s)]
        topic_answer = self.topic_answer(chunk, statements)
        if topic_answer and "extractive_qa" in mix and self._deficit(mix, counts, "extractive_qa") > 0:
            if question := self.topic_question(chunk, rng):
                emit("extractive_qa", question, topic_answer, {})
        for sentence in rng.sample(statements, len(statements)):
            options = self._options(sentence, chunk["url"], mix, rng)
            questions = self.extractive_questions(sentence, rng) if "extractive_qa" in mix else []
            for task, build in self._families(options, questions, mix, counts)[: recipe["rows_per_sentence"]]:
                built = build(self._label(task, recipe, label_counts, rng))
                if built is not None:
                    emit(task, built[0], sentence, built[1])
        return rows

    def _options(self, sentence: str, url: str, mix: dict, rng: random.Random) -> dict:
        """The statement tasks this sentence can serve, each a builder: wanted label →
        (instruction, {"label", ["edit"]}) or None when that label cannot be made."""
        if not self._is_claim(sentence):
            return {}
        edit = self.false_edit(sentence, rng)
        options = {}

        def true_false(wanted: str):
            if wanted == "false" and edit is None:
                return None
            statement = sentence if wanted == "true" else edit[1]
            instruction = self._pick(
                self.params["true_false_templates"],
                rng,
                statement=statement,
                statement_lower=self.vocab.lower_first(statement).rstrip("."),
            )
            return instruction, {"label": wanted} | ({"edit": edit[0]} if wanted == "false" else {})

        def yes_no(wanted: str):
            question, is_yes = yes_no_question
            if wanted == ("yes" if is_yes else "no"):
                return question, {"label": wanted}
            # A "no" for a positive sentence: ask about a swapped number or entity instead.
            swapped = self.yes_no_question(edit[1]) if is_yes and edit and edit[0] != "negation" else None
            return (swapped[0], {"label": "no", "edit": edit[0]}) if swapped else None

        def nli(wanted: str):
            if wanted == "neutral":
                hypothesis = self._distractor(url, rng)
            else:
                hypothesis = sentence if wanted == "entailment" else edit[1] if edit else None
            if hypothesis is None:
                return None
            extra = {"label": wanted} | ({"edit": edit[0]} if wanted == "contradiction" else {})
            return self._pick(self.params["nli_templates"], rng, hypothesis=hypothesis), extra

        yes_no_question = self.yes_no_question(sentence)
        if "true_false" in mix:
            options["true_false"] = true_false
        if "yes_no" in mix and yes_no_question:
            options["yes_no"] = yes_no
        if "nli" in mix:
            options["nli"] = nli
        return options

    def _families(self, options: dict, questions: list[str], mix: dict, counts: Counter) -> list:
        """One statement task (true/false, yes/no or NLI: they would restate the same sentence),
        the one furthest below its share, and the sentence's questions, neediest type first."""
        statement = sorted(options.items(), key=lambda family: -self._deficit(mix, counts, family[0]))[:1]
        asked = [("extractive_qa", lambda label, q=q: (q, {})) for q in questions]
        return sorted(statement + asked, key=lambda family: -self._deficit(mix, counts, family[0]))

    @staticmethod
    def _deficit(mix: dict, counts: Counter, task: str) -> float:
        total = sum(counts.values()) + 1
        return mix.get(task, 0) * total - counts[task]

    def _label(self, task: str, recipe: dict, label_counts: Counter, rng: random.Random) -> str:
        """The label that keeps this task's classes nearest the recipe's shares."""
        labels = {
            "true_false": {"true": recipe["true_share"], "false": 1 - recipe["true_share"]},
            "yes_no": {"yes": recipe["yes_share"], "no": 1 - recipe["yes_share"]},
            "nli": dict(recipe["nli_shares"]),
            "extractive_qa": {"answer": 1.0},
        }[task]
        total = sum(label_counts[(task, label)] for label in labels) + 1
        return max(labels, key=lambda label: (labels[label] * total - label_counts[(task, label)], rng.random()))

    def _distractor(self, url: str, rng: random.Random) -> str | None:
        """A statement from another page of the docs: what the chunk neither supports nor denies."""
        others = [sentence for other_url, sentence in self.distractors if other_url != url]
        return rng.choice(others) if others else None

    def _row(self, chunk, recipe, task, instruction, answer_sentence, rng, extra) -> dict:
        output = self._output(recipe, task, extra.get("label"), answer_sentence)
        if recipe["input_mode"] == "optional" and rng.random() < recipe["empty_input_share"]:
            context = ""
        elif recipe["input_mode"] == "optional":
            context = answer_sentence
        else:
            context = chunk["text"]
        return {
            "input": context,
            "instruction": instruction,
            "output": output,
            "task_type": task,
            "chunk_id": chunk["chunk_id"],
            "url": chunk["url"],
            "teacher": "offline",
        } | extra

    def _output(self, recipe: dict, task: str, label: str | None, sentence: str) -> str:
        if task == "extractive_qa":
            return sentence
        word = {
            "true": "True.",
            "false": "False.",
            "yes": "Yes.",
            "no": "No.",
            "entailment": "Entailment.",
            "contradiction": "Contradiction.",
            "neutral": "Neutral.",
        }[label]
        if recipe["answer_style"] == "short":
            return word
        if label == "neutral":
            return f"{word} {self.params['neutral_explanation']}"
        return f"{word} {sentence}"
