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

import logging
import random
import re
from collections import defaultdict

from tqdm.auto import tqdm

from kaggle_qa.domain import Domain, fill_templates, needs

from ..grammar import (
    ASIDE,
    AUX_QUESTION,
    BECAUSE,
    BEST_WAY,
    CAPABILITY,
    CLAUSE_START,
    COMMAND_DOES,
    DEFINITION,
    HOW_MANY,
    IF_COND,
    IMPERATIVE,
    imperative_start,
    LEADING_CLAUSE,
    LEAD_IN,
    LEANS_ON_PREVIOUS,
    NAMED_ITEM,
    NEED_FOR,
    NEED_TO,
    OBJECTS,
    ONCE,
    PRONOUN_START,
    RECOMMEND,
    SCOPED_WHAT,
    SUBJECT_BAN,
    TO_GOAL,
    TO_GOAL_BARE,
    TRAILING_ADVERB,
    USE_TO,
    WAY_TO,
    WHERE,
    who_can_pattern,
    WORD,
    YOU_CAN,
    Vocabulary,
    as_sentence,
    balanced_parentheses,
    lead_in_as_statement,
    lead_in_question,
    setting_questions,
    base_form,
    FUNCTION_WORDS,
    content_words,
    n_words,
    question_problem,
    tidy,
    to_first_person,
)
from ..audit import LABELS
from ..near_duplicates import RougeIndex
from .claims import Claim, balanced, chunk_claims, cue_cell, excluded_kind, similar_sentences, worded_operation
from .units import CAPTION, CONTINUES, incomplete_answer, lead_in_units, numbered_sentences, prose_sentences, setting_units

logger = logging.getLogger(__name__)


class OfflineTeacher:
    """Builds QA rows for one version's recipe from chunks; no network, seeded."""

    def __init__(self, all_chunks: list[dict], offline_params: dict, seed: int, domain: Domain | None = None):
        """`domain` fills the templates' ``{domain}``, ``{docs_title}``, … (templates that need a
        field it leaves null, or any field when there is no domain, are left out)."""
        self.domain = domain
        self.params = self._filled(offline_params, domain)
        self.seed = seed
        self.vocab = Vocabulary.from_chunks(all_chunks, offline_params["swap_groups"], domain.name if domain else None)
        self.who_can = who_can_pattern(domain.user_noun if domain else None)
        self.objects = OBJECTS | ({domain.user_noun.lower()} if domain and domain.user_noun else set())
        self.exclusive_antonyms = frozenset(offline_params["exclusive_antonyms"])
        self.distractors = [
            (chunk["url"], sentence)
            for chunk in all_chunks
            for sentence in map(as_sentence, prose_sentences(chunk["text"]))
            if self._is_statement(sentence)
        ]
        self._asked = RougeIndex(offline_params["avoid_similar_questions_rouge_l"])

    def _names_domain(self, text: str) -> int:
        """How often the text names the domain."""
        return len(re.findall(rf"\b{re.escape(self.domain.name)}\b", text)) if self.domain else 0

    def _imperative(self, text: str):
        """An instruction to the reader ("Click the button …"), not a sentence about the domain."""
        return imperative_start(text, self.domain.name if self.domain else None)

    @staticmethod
    def _filled(offline_params: dict, domain: Domain | None) -> dict:
        """The offline parameters with every template list filled from the domain."""
        params = dict(offline_params)
        for key, value in offline_params.items():
            if key.endswith("_templates"):
                params[key] = fill_templates(value, domain) if domain else [t for t in value if not needs(t)]
                if not params[key]:
                    raise ValueError(f"synthesis.offline.{key}: no template left for this domain")
        return params

    def _pick(self, templates: list[str], rng: random.Random, **fields: str) -> str:
        """A template filled in, preferring a wording unlike the questions asked so far (a varied
        dataset, and fewer rows lost to the near-duplicate filter)."""
        options = [template.format(**fields) for template in rng.sample(templates, len(templates))]
        if self.domain and any(self._names_domain(value) for value in fields.values()):
            # not "Can you explain how to use Click in Click?": the topic names the domain already
            options = [option for option in options if self._names_domain(option) < 2] or options
        options = [option for option in options if not question_problem(option)] or options
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
            and not self._imperative(LEADING_CLAUSE.sub("", sentence, count=1))  # the main clause
            and not LEANS_ON_PREVIOUS.search(sentence)
            and not re.match(r"(For example|For instance|E\.g\.)", sentence)
            and not NAMED_ITEM.match(sentence)  # an entry of a list ("Grandmaster Panel: A panel Q&A …")
        )

    # ---------------------------------------------------------------- question forms
    def _subject(self, subject: str) -> str | None:
        subject = TRAILING_ADVERB.sub("", subject)
        if SUBJECT_BAN.search(subject):
            return None
        if any(p.match(subject) for p in (PRONOUN_START, CLAUSE_START)) or self._imperative(subject):
            return None
        if n_words(subject) > self.params["max_subject_words"]:
            return None
        if re.search(r"\b(?:you|I|we|they)$", subject):
            return None  # "the first thing you" (of "The first thing you do is …"): a clause, no subject
        if re.match(r"(any|every|some|no)(one|body|thing)\b", subject, re.I):
            return None  # "How does the documentation describe anyone in the team?"
        if subject in ("You", "Your"):
            return {"You": "I", "Your": "my"}[subject]
        if subject.split()[-1].lower() in FUNCTION_WORDS:
            return None  # a fragment ("return a", "the names for the"): the regex stopped inside a phrase
        return self.vocab.lower_first(to_first_person(subject))

    def yes_no_question(self, sentence: str) -> tuple[str, bool] | None:
        """("Can I …?", answer_is_yes) by moving the auxiliary verb to the front."""
        match = AUX_QUESTION.match(sentence)
        if (
            not match
            or n_words(sentence) > self.params["max_yes_no_words"]
            or re.search(r"[:;]|, (and|whereas|but) ", sentence)
            or LEANS_ON_PREVIOUS.search(sentence)
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
        clause = ASIDE.sub("", LEAD_IN.sub("", sentence))
        clause = clause[0].upper() + clause[1:]
        questions = []
        for question in (self._wh_question(clause, rng), self._subject_question(clause, rng)):
            if question and balanced_parentheses(question):
                question = tidy(TRAILING_ADVERB.sub("", question[:-1]) + "?") if question.endswith("?") else question
                if question not in questions:
                    questions.append(question)
        return questions

    def _wh_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := TO_GOAL.match(sentence) or USE_TO.match(sentence) or TO_GOAL_BARE.match(sentence):
            return f"How do I {to_first_person(match['goal'])}?"
        if match := COMMAND_DOES.match(sentence):
            return f"Which command {match['verb']} {to_first_person(match['rest'])}?"
        if match := BEST_WAY.match(sentence):
            return f"What is the {match['adj']} way to {to_first_person(match['goal'])}?"
        if (match := NEED_FOR.match(sentence)) and not LEANS_ON_PREVIOUS.search(match["what"]):
            return f"What do I need to {to_first_person(match['goal'])}?"
        if match := WAY_TO.match(sentence):
            return f"What is a good way to {to_first_person(match['goal'])}?"
        if match := SCOPED_WHAT.match(sentence):
            return f"What {match['be']} the {match['what']} {match['prep'].lower()} {match['scope']}?"
        if (match := NAMED_ITEM.match(sentence)) and ": " not in sentence[match.end():]:
            # not of a listing's entry ("Marios Michailidis: How to become a #1: …", a talk)
            name = match["name"]
            return f"What {'are' if name.endswith('s') else 'is'} {name}?"
        if (match := WHERE.match(sentence)) and (subject := self._subject(match["subj"])):
            return f"Where can I find {subject}?"
        if match := RECOMMEND.match(sentence):
            who = f"does {self.domain.docs_title}" if self.domain else "do the docs"
            return f"What {who} recommend {match['when']} {to_first_person(match['cond'])}?"
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
            # not "Where can I navigate to "Options"?", nor "Where can I use output files?" (from "use
            # output files from another Notebook": the place belongs to the object)
            place_of_object = lead == "Where can I" and act.startswith("use ")
            if not re.match(r"(navigate|go|head|click|scroll)\b", act) and not place_of_object:
                return f"{lead} {to_first_person(TRAILING_ADVERB.sub('', act))}?"
        if match := self.who_can.match(sentence):
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
        if subject is None or subject in ("I", "my") or content_words(subject) < 2:
            return None  # "What should I know about the answer?" names nothing a reader could look up
        return self._pick(self.params["subject_templates"], rng, subject=subject)

    def _pattern_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := CAPABILITY.match(sentence):
            subject = self._subject(match["subj"])
            if subject:
                verb, _, particle = match["verb"].partition(" ")  # "consists of"
                do = "does" if verb.endswith("s") and subject not in ("I",) else "do"
                lemma = base_form(verb) if verb.endswith("s") else verb
                first = match["rest"].split()[0].lower()
                if lemma in ("allow", "let", "enable", "help") and first in self.objects:
                    who = "me" if first == "you" else first
                    to = " to" if lemma in ("allow", "enable") else ""
                    return f"What {do} {subject} {lemma} {who}{to} do?"
                if lemma not in ("allow", "let", "enable", "help"):
                    return f"What {do} {subject} {' '.join(filter(None, (lemma, particle)))}?"
        return None

    def topic_question(self, chunk: dict, rng: random.Random) -> str | None:
        """A question about the chunk's section, asked the way a newcomer would."""
        if not chunk.get("heading_path"):
            return None
        heading = tidy(chunk["heading_path"][-1])
        if heading.endswith("?"):
            return heading
        if re.search(r"\b(?:FAQs?|Overview|Introduction)$", heading):
            return None  # not "Can you explain code competition FAQ in <domain>?" (an FAQ's own questions are asked)
        topic = self.vocab.lower_title(heading)
        if n_words(topic) < 2 and len(chunk["heading_path"]) < 2:
            return None  # a page's one-word title ("Options"); a one-word section ("Counting") is a topic
        if self._imperative(heading) or re.match(r"^[A-Z][a-z]+ (?:your|a|an|the)\b", heading) and not topic.split()[0].endswith(("ing", "s")):
            return f"How do I {to_first_person(topic)}?"
        if topic.split()[0].endswith("ing"):
            return self._pick(self.params["activity_templates"], rng, topic=topic)
        if re.match(r"(?:types|kinds|ways|steps|parts) (?:of|to)\b", topic):
            topic = f"the {topic}"  # "Can you explain the types of team memberships in <domain>?", not "explain types of …"
        return self._pick(self.params["topic_templates"], rng, topic=topic)

    @staticmethod
    def topic_answer(chunk: dict, statements: list[str], opening: str | None = None) -> str | None:
        """The chunk's first statement that names the section's topic (a word of its heading) and
        is no add-on to an earlier one ("You can also add a `-u` flag …" does not say how to create
        a dataset). Failing that, the chunk's ``opening`` sentence when it names a word of the
        heading: a section opens on its topic ("Similarly to `nargs`, there is also the case of
        wanting to support a parameter being provided multiple times …" under "Multiple Options")."""
        if not chunk.get("heading_path"):
            return None
        stems = {w.lower()[:5] for w in WORD.findall(chunk["heading_path"][-1]) if len(w) >= 4}
        for sentence in statements:
            shared = stems & {w.lower()[:5] for w in WORD.findall(sentence)}
            add_on = LEAD_IN.match(sentence) or re.match(r"(?:\S+ ){0,3}also\b", sentence)
            if len(shared) >= min(2, len(stems)) and shared and not PRONOUN_START.match(sentence) and not add_on:
                return sentence
        if opening and stems & {w.lower()[:5] for w in WORD.findall(opening)} and not PRONOUN_START.match(opening):
            return opening
        return None

    # ---------------------------------------------------------------- rows
    def generate(self, chunks: list[dict], recipe: dict, version: str) -> list[dict]:
        """Rows for every chunk of one version: every extractive question the chunks give, then
        labelled rows (true/false, yes/no, NLI) drawn cue-balanced from every chunk's claims, as
        many as the recipe's task mix and ``min_rows`` ask for."""
        mix = {task: share for task, share in recipe["task_mix"].items() if share > 0}
        self._asked = RougeIndex(self.params["avoid_similar_questions_rouge_l"])
        extractive, pool = [], []
        for chunk in tqdm(chunks, desc=f"offline teacher {version}", unit="chunk"):
            rng = random.Random(f"{self.seed}:{version}:{chunk['chunk_id']}")
            numbered = numbered_sentences(chunk["text"])
            sentences = [as_sentence(s) for _, s in numbered]
            if "extractive_qa" in mix:
                # passage answers read the paragraph each sentence stands in
                paragraphs = [n for n, _ in numbered] if self.params.get("answer_scope", "sentence") == "passage" else None
                extractive += self._extractive_rows(chunk, sentences, recipe, rng, paragraphs)
            statements = [s for s in sentences if self._is_claim(s)]
            others = similar_sentences(chunk["text"], self.distractors, chunk["url"], 6) if "nli" in mix else []
            claims = chunk_claims(
                statements, others, self.vocab, self.params["antonym_groups"], rng, chunk["text"],
                exclusive=self.exclusive_antonyms,
            )
            claims = [claim for claim in claims if not excluded_kind(claim.kind, self.params.get("exclude_claim_kinds"))]
            pool += [(chunk, claim) for claim in claims]
        quotas = self._quotas(len(extractive), mix, recipe)
        rng = random.Random(f"{self.seed}:{version}:labelled")
        return extractive + self._labelled_rows(pool, quotas, recipe, rng)

    @staticmethod
    def _quotas(n_extractive: int, mix: dict, recipe: dict) -> dict[str, int]:
        """Rows wanted per labelled task: the mix's shares of a total that holds every extractive
        row and at least ``min_rows`` rows (the labelled tasks fill what extractive rows cannot)."""
        labelled = {task: share for task, share in mix.items() if task != "extractive_qa"}
        extractive_share = mix.get("extractive_qa", 0)
        total = max(n_extractive / extractive_share if extractive_share else 0, recipe.get("min_rows", 0))
        rest = max(total - n_extractive, 0)
        return {task: round(rest * share / sum(labelled.values())) for task, share in labelled.items()}

    def _labelled_rows(self, pool: list, quotas: dict, recipe: dict, rng: random.Random) -> list[dict]:
        """Cue-balanced rows per labelled task, scarcest task first; a claim serves one row of
        each task (asked as a true/false statement, a yes/no question and an NLI hypothesis)."""
        rows: list[dict] = []
        seen = defaultdict(lambda: RougeIndex(self.params["avoid_similar_questions_rouge_l"]))
        for task in sorted(quotas, key=lambda t: {"yes_no": 0, "nli": 1, "true_false": 2}[t]):
            used: set[int] = set()
            items = []
            for index, (chunk, claim) in enumerate(pool):
                if index in used or (built := self._item(task, chunk, claim, recipe)) is None:
                    continue
                label, text = built
                items.append((label, (worded_operation(claim.kind), *cue_cell(text, chunk["text"], novel=task != "nli")), index))
            wanted, picked = max(quotas[task] // len(LABELS[task]), 0), []
            for group in balanced(items, LABELS[task], rng):
                if len(picked) == wanted:
                    break
                # One template for every row of a group: the wording then says nothing about the label.
                template = rng.randrange(1 << 30)
                built = [
                    self._labelled_row(task, label, *pool[index], recipe, random.Random(template))
                    for label, _, index in group
                ]
                if any(seen[(task, row["label"])].is_near_duplicate(row["instruction"])[0] for row in built):
                    continue  # the filters would drop it as a near-duplicate and unbalance the cell
                for (_, _, index), row in zip(group, built):
                    used.add(index)
                    seen[(task, row["label"])].add(row["instruction"])
                    self._asked.add(row["instruction"])
                rows += built
                picked.append(group)
            n_rows = len(picked) * len(LABELS[task])
            logger.info("%s: %d cue-balanced rows of %d wanted (%d candidates)", task, n_rows, quotas[task], len(items))
        return rows

    def _item(self, task: str, chunk: dict, claim: Claim, recipe: dict) -> tuple[str, str] | None:
        """(label, the text a reader of the question sees) of a claim for a task, or None."""
        if task == "nli":
            label = {True: "entailment", False: "contradiction", None: "neutral"}[claim.truth]
            return label, claim.text
        if claim.truth is None:
            return None
        if task == "true_false":
            return ("true" if claim.truth else "false"), claim.text
        inverted = self.yes_no_question(claim.text)
        if inverted is None:
            return None
        question, positive = inverted
        if claim.truth is False and not positive and "entity_swap" in claim.kind:
            # "Do featured competitions offer prizes?" from the false "Featured competitions do
            # not offer prizes" (the docs say it of Research ones): "yes" is nothing the docs say.
            return None
        return ("yes" if claim.truth == positive else "no"), question.rstrip("?")

    def _labelled_row(self, task, label, chunk, claim, recipe, rng) -> dict:
        if task == "true_false":
            # A seeded draw, blind to what was asked before and the same for every row of a
            # contrast group (see _labelled_rows): the template never tells the label.
            instruction = rng.choice(self.params["true_false_templates"]).format(
                statement=claim.text, statement_lower=self.vocab.lower_first(claim.text).rstrip(".")
            )
        elif task == "yes_no":
            instruction = self.yes_no_question(claim.text)[0]
        else:
            instruction = rng.choice(self.params["nli_templates"]).format(hypothesis=claim.text)
        return self._row(chunk, recipe, task, instruction, claim.evidence, rng, {"label": label, "edit": claim.kind})

    def _extractive_rows(self, chunk: dict, sentences: list[str], recipe: dict, rng: random.Random,
                         paragraphs: list[int] | None = None) -> list[dict]:
        """Every natural question of one chunk whose answer it holds, each answered completely
        (see :mod:`.units`): an FAQ's own question, the section's topic, a lead-in's question
        answered with its list / code block / table, a setting's "what does it do" and default,
        and questions about single sentences (answered with the sentence, the ones after it that
        lean on it or continue it, and the block it introduces)."""
        rows: list[dict] = []
        asked: set[str] = set()
        bounds = self.params["answer_max_words"], self.params["answer_max_lines"]
        heading = chunk["heading_path"][-1] if chunk.get("heading_path") else None
        lead_ins = {as_sentence(u.anchor): u for u in lead_in_units(chunk["text"], *bounds)}
        # a lead-in whose block is too long for an answer: no question of it, nor of its bare lead-in
        cut = {as_sentence(s) for s in prose_sentences(chunk["text"]) if s.endswith(":")} - set(lead_ins)

        def answer_of(sentence: str) -> str:
            return self._with_followers(sentence, sentences, lead_ins, paragraphs)

        def emit(question: str, answer: str) -> None:
            # a near-duplicate is a like question with the same answer (the filters' rule): "Can you
            # tell me about multiple options?" and "… about parameter modifications?" are two questions
            if question in asked or question_problem(question) or any(m[2] == answer for m in self._asked.matches(question)):
                return
            if incomplete_answer(answer, *bounds):
                return  # never a bare lead-in, never a cut answer
            asked.add(question)
            self._asked.add(question, payload=answer)
            rows.append(self._row(chunk, recipe, "extractive_qa", question, answer, rng, {}))

        for question, answer in zip(sentences, sentences[1:]):
            if question.endswith("?") and n_words(question) >= 4:
                if answer in lead_ins:
                    emit(question, lead_ins[answer].text)
                elif self._is_statement(answer):
                    emit(question, answer_of(answer))
        for unit in setting_units(chunk["text"], heading, *bounds):
            for question in setting_questions(unit.name)[: recipe["rows_per_sentence"]]:
                emit(question, unit.text)
        statements = [s for s in sentences if self._is_statement(s)]
        opening = sentences[0] if paragraphs is not None and sentences and (sentences[0] in statements or sentences[0] in lead_ins) else None
        topic_answer = self.topic_answer(chunk, statements + list(lead_ins), opening)
        if topic_answer and (question := self.topic_question(chunk, rng)):
            emit(question, answer_of(topic_answer))
        for lead, unit in lead_ins.items():
            questions = [lead_in_question(lead.rstrip(":"))]
            questions += self.extractive_questions(lead_in_as_statement(lead), rng)
            for question in [q for q in dict.fromkeys(questions) if q][: recipe["rows_per_sentence"]]:
                emit(question, unit.text)
        for sentence in rng.sample(statements, len(statements)):
            if sentence in lead_ins or sentence in cut:
                continue  # asked above, with its block
            for question in self.extractive_questions(sentence, rng)[: recipe["rows_per_sentence"]]:
                emit(question, answer_of(sentence))
        return rows

    def _with_followers(
        self, sentence: str, sentences: list[str], lead_ins: dict | None = None, paragraphs: list[int] | None = None
    ) -> str:
        """The sentence and the ones right after it that only make sense with it ("It …") or
        continue it ("Then …", the next step of a how-to), within the answer bounds; a lead-in
        brings the block it introduces.

        Given the sentences' ``paragraphs`` (``answer_scope: passage``; block numbers from
        :func:`.units.numbered_sentences`) the answer is the rest of the sentence's passage: the
        sentences after it in its paragraph, the block that paragraph leads into, or the example
        a short caption right after it introduces ("Example:" and its code). In docs the option,
        command or code that answers a how-to question usually comes after the sentence that
        names the topic, so a one-sentence answer teaches the model to stop before the answer."""
        lead_ins = lead_ins or {}
        if sentence in lead_ins:
            return lead_ins[sentence].text
        max_words = self.params["answer_max_words"]
        passage = paragraphs is not None
        answer = [sentence]
        how_to = bool(TO_GOAL.match(sentence) or TO_GOAL_BARE.match(sentence) or self._imperative(sentence))
        start = sentences.index(sentence)
        for i in range(start + 1, len(sentences)):
            following = sentences[i]
            same = passage and paragraphs[i] == paragraphs[i - 1]
            caption = passage and paragraphs[i] == paragraphs[i - 1] + 1 and bool(CAPTION.match(following))
            if following in lead_ins:
                if same or caption or CONTINUES.match(following) or how_to or PRONOUN_START.match(following):
                    extended = [*answer, lead_ins[following].text]
                    if n_words(" ".join(extended)) <= max_words:
                        answer = extended
                break
            if following.endswith((":", "?")):
                break  # a lead-in whose block does not fit, or another question: not this answer
            leans = PRONOUN_START.match(following) and self._is_statement(following)
            step = (CONTINUES.match(following) or (how_to and self._imperative(following))) and following.endswith(".")
            if not (same or leans or step) or n_words(" ".join([*answer, following])) > max_words:
                break
            answer.append(following)
        text = answer[0]
        for part in answer[1:]:
            text += ("\n" if "\n" in part else " ") + part  # a block starts on its own line
        return text

    def _row(self, chunk, recipe, task, instruction, answer, rng, extra) -> dict:
        output = self._output(recipe, task, extra.get("label"), answer)
        if recipe["input_mode"] == "optional" and rng.random() < recipe["empty_input_share"]:
            context = ""
        elif recipe["input_mode"] == "optional":
            context = answer
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

    def _output(self, recipe: dict, task: str, label: str | None, evidence: str) -> str:
        """Extractive: the answer sentences; labelled: the label first ("True."), then (recipe
        style "sentence") the chunk's sentence that decides it."""
        if task == "extractive_qa":
            return evidence
        word = f"{label.capitalize()}."
        if recipe["answer_style"] == "short":
            return word
        if label == "neutral":
            return f"{word} {self.params['neutral_explanation']}"
        return f"{word} {evidence}"
