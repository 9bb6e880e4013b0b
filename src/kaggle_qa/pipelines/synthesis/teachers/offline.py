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
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..near_duplicates import RougeIndex

ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "ex.", "approx.", "Ex.")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“‘(])")
_WORD = re.compile(r"[A-Za-z][A-Za-z’'\-]*")
_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "fifty hundred thousand million"
).split()
_NUMBER = re.compile(  # group 1: digits (not part of a version, path or id), group 2: a number word
    r"(?<![\w./-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w./]|-\w)|\b(" + "|".join(_NUMBER_WORDS) + r")\b"
)
_PRONOUN_START = re.compile(r"^(It|This|That|These|Those|They|There|Here|He|She|We|Such|Both|Each of these)\b")
_CLAUSE_START = re.compile(
    r"^(If|When|Once|To|For|In|After|Before|While|Although|Though|As|Because|Since|With|By|On|At|"
    r"From|Note|Also|However|Then|Otherwise|Unless|Instead|Additionally|Alternatively|Finally|Similarly)\b"
)
# Negation edits: the earliest match in the sentence is flipped (longer patterns first).
_NEGATIONS = (
    (r"\bcannot\b", "can"),
    (r"\bcan't\b", "can"),
    (r"\bcan not\b", "can"),
    (r"\bis not\b", "is"),
    (r"\bisn't\b", "is"),
    (r"\bare not\b", "are"),
    (r"\baren't\b", "are"),
    (r"\bwill not\b", "will"),
    (r"\bwon't\b", "will"),
    (r"\bdoes not\b", "does"),
    (r"\bdo not\b", "do"),
    (r"\bdon't\b", "do"),
    (r"\bshould not\b", "should"),
    (r"\bnever\b", "always"),
    (r"\balways\b", "never"),
    (r"\bcan\b", "cannot"),
    (r"\bis\b", "is not"),
    (r"\bare\b", "are not"),
    (r"\bwill\b", "will not"),
    (r"\bshould\b", "should not"),
)
_AUX_QUESTION = re.compile(
    r"^(?P<subj>[A-Z][^,;:()]{1,70}?) (?P<aux>can|cannot|can't|is|isn't|are|aren't|will|won't|should|"
    r"does|do|has|have)(?P<neg> not)?\b (?P<rest>[^?]+)\.$"
)
_TO_GOAL = re.compile(r"^To (?P<goal>[a-z][^,]{5,90}), (?P<rest>.{10,})$")
_IF_COND = re.compile(r"^If (?P<cond>(?:you|your)\b[^,]{5,90}), (?P<rest>.{10,})$")
_IMPERATIVE = re.compile(
    r"^(you should|you can|you need|you must|you will need|please|make sure|go|click|ensure|try|check|"
    r"use|contact|visit|navigate|see|run|select|open|reach out|consider)\b",
    re.I,
)
_DEFINITION = re.compile(
    r"^(?P<subj>(?:The |A |An )?[A-Z][\w\-’' ]{1,50}?) (?P<be>is|are) (?P<rest>(?:a|an|the|one of|"
    r"designed|used|intended|meant)\b.+)$"
)
_CAPABILITY = re.compile(
    r"^(?P<subj>(?:The |A |An |Your )?[A-Z][\w\-’' ]{1,50}?) (?P<verb>allows?|lets?|enables?|helps?|"
    r"gives?|provides?|offers?|contains?|includes?|supports?|shows?|displays?|requires?|lists?)\b (?P<rest>.+)$"
)
_YOU_CAN = re.compile(
    r"^You can (?P<act>[a-z][^,]{5,80}?) (?P<how>by|using|with|via|through|from|in|on|at) (?P<rest>.+)$"
)
_ONCE = re.compile(r"^(?P<when>Once|After|When) (?P<cond>[^,]{5,90}), (?P<rest>.{10,})$")
_NEED_TO = re.compile(
    r"^(?:You|you) (?:must|need to|have to|should|will need to) (?P<act>.+?) "
    r"(?P<purpose>in order to|before|so that) (?P<goal>[^,]+)\.$"
)
_WHO_CAN = re.compile(
    r"^(?:Only )?(?P<who>(?:[A-Z][a-z]+ )?(?:[Uu]sers|[Pp]articipants|[Hh]osts|[Tt]eams?|[Mm]embers|Kagglers|"
    r"[Aa]nyone|[Ee]veryone|[Tt]eam [Ll]eaders?|[Cc]ollaborators|[Aa]dmins?|[Oo]wners?)) "
    r"(?P<modal>can|may) (?P<act>[^,]{5,90})\.$"
)
_HOW_MANY = re.compile(
    r"^There (?:are|is) (?P<num>\d+|two|three|four|five|six|seven|eight|nine|ten) "
    r"(?P<what>[a-z][a-z \-]{2,50}?)(?=[:.,]| that| which| for| of| on| in| you| available)"
)
_BECAUSE = re.compile(r"^(?P<main>[A-Z][^,]{10,120}?),? (?:because|since) (?P<reason>.{8,})\.$")
_TRAILING_ADVERB = re.compile(
    r"\s+(either|also|easily|simply|directly|quickly|only|even|all|now|here|currently|still|always|often|usually|"
    r"typically|already)$"
)
_IMPERATIVE_START = re.compile(
    r"^(Then,? )?(Click|Select|Go|Run|Navigate|Make sure|Follow|Choose|Use|Open|Add|Enter|Type|Press|Visit|See|Check|"
    r"Try|Remember|Note|Please|Ensure|Create|Upload|Download|Set|Install|Find|Learn|Read|Take|Keep|Avoid|Be|Do|Don’t|"
    r"Don't|Make|Consider|View|Head|Scroll|Hover|Toggle|Fill|Give|Provide|Write|Specify|Pick)\b"
)
_FUNCTION_WORDS = set(
    "the a an this that these those it its if when once to for in after before while although though as because "
    "since with by on at from also however then otherwise unless instead additionally alternatively finally "
    "similarly some most many each every all any both there here you your we our they their another other "
    "beyond within without during until upon under over into onto again just even only not no yes what which who "
    "how where why my".split()
)
_LINK_TARGET = re.compile(r"\s*\((?:https?://|www\.)[^)\s]*\)")
_COMMAND_ITEM = re.compile(r"^(?:- )?(?P<command>`[^`]+`): (?P<verb>[a-z]+)\b(?P<rest>.*?)\.?$")
_LEAD_IN = re.compile(
    r"^(Additionally|However|Currently|Alternatively|Also|Similarly|In addition|In general|In most cases|"
    r"In normal situations|Typically|Generally|Finally|For now|Notice that|Note that|Remember that),? "
)
_NAMED_ITEM = re.compile(r"^(?P<name>[A-Z][\w’' &-]{2,40}): (?=[A-Z])")
_USE_TO = re.compile(r"^Use (?P<tool>.{3,90}?) to (?P<goal>[a-z][^,]{5,80})\.$")
_WHERE = re.compile(
    r"^(?P<subj>(?:The |A |An )?[A-Z][\w\-’' ]{1,50}?),? (?:is|are) (?:accessible|available|located|found) "
    r"(?:from|in|on|at|through|via) "
)
_RECOMMEND = re.compile(
    r"^We (?:strongly )?recommend (?P<what>.+?) (?P<when>before|when|if|for) (?P<cond>[^,]{5,80})\.$"
)
_OBJECTS = {"you", "users", "participants", "hosts", "teams", "kagglers", "people", "anyone", "everyone", "us"}
_SUBJECT_BAN = re.compile(
    r"\b(that|which|who|whom|where|when|if|because|and|or|but|every|each|all|any|most|some|many|other|another|"
    r"must|may|might|should|would|could|need|needs|will|can|cannot|is|are|was|were|be|been|to|do|does|did|not)\b",
    re.I,
)


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk, line by line, not broken after common abbreviations."""
    sentences = []
    for line in text.splitlines():
        protected = line.strip()
        for abbreviation in ABBREVIATIONS:
            protected = protected.replace(abbreviation, abbreviation.replace(".", "\x00"))
        sentences += [part.replace("\x00", ".").strip() for part in _SENTENCE_END.split(protected)]
    return [s for s in sentences if s]


def tidy(text: str) -> str:
    """Collapse whitespace and the space the docs sometimes leave before punctuation."""
    text = text.replace("\ufe0f", "").replace("\u200b", "")
    return re.sub(r"\s+([?.!,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()


def as_sentence(line: str) -> str:
    """A docs line as a plain sentence: link targets dropped ("Kaggle Learn (https://…)" →
    "Kaggle Learn"), and a command list item "`cmd`: list things" → "`cmd` lists things."."""
    line = tidy(_LINK_TARGET.sub("", line))
    match = _COMMAND_ITEM.match(line)
    if match:
        verb = match["verb"]
        if verb.endswith("y"):
            verb = verb[:-1] + "ies"
        else:
            verb += "es" if re.search(r"(s|sh|ch|x)$", verb) else "s"
        return f"{match['command']} {verb}{match['rest']}."
    return line


def n_words(text: str) -> int:
    return len(text.split())


def _lemma(verb: str) -> str:
    """Base form of a third-person verb ("provides" → "provide", "has" → "have")."""
    irregular = {"has": "have", "does": "do", "is": "be", "goes": "go"}
    if verb in irregular:
        return irregular[verb]
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if re.search(r"(ss|ch|sh|x|z)es$", verb):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") and not verb.endswith("ss") else verb


def to_first_person(text: str) -> str:
    """Rewrite the docs' "you" as the asker's "I/me" ("your team" → "my team")."""
    text = re.sub(r"\byourself\b", "myself", text)
    text = re.sub(r"\byours\b", "mine", text)
    text = re.sub(r"\byour\b", "my", text)
    text = re.sub(r"\bYour\b", "My", text)
    text = re.sub(
        r"\b(to|for|with|by|from|give|gives|let|lets|allow|allows|help|helps|show|shows|ask|tell|send|invite|of|"
        r"about|at|on|than|like|notify|email|remind) you\b",
        r"\1 me",
        text,
    )
    text = re.sub(r"\byou\b", "I", text)
    return re.sub(r"\bI are\b", "I am", re.sub(r"\bI’re\b|\bI're\b", "I am", text))


@dataclass
class Vocabulary:
    """What the whole docs corpus says about casing, numbers and swappable entities."""

    lower_counts: Counter
    upper_counts: Counter
    numbers: list[str]
    number_words: list[str]
    swap_groups: list[list[str]]

    @classmethod
    def from_chunks(cls, chunks: list[dict], swap_groups: list[list[str]]) -> Vocabulary:
        lower, upper, numbers, words = Counter(), Counter(), set(), set()
        corpus = "\n".join(chunk["text"] for chunk in chunks)
        for sentence in split_sentences(corpus):
            for position, word in enumerate(_WORD.findall(sentence)):
                if word[0].islower():
                    lower[word] += 1
                elif position > 0:
                    upper[word.lower()] += 1
            for match in _NUMBER.finditer(sentence):
                (numbers if match.group(1) else words).add(match.group(0))
        groups = [[term for term in group if re.search(rf"\b{re.escape(term)}\b", corpus)] for group in swap_groups]
        return cls(lower, upper, sorted(numbers), sorted(words), [g for g in groups if len(g) > 1])

    def lower_first(self, text: str) -> str:
        """Lower-case the first word unless the docs write it capitalised (a name, an acronym)."""
        match = _WORD.match(text)
        if not match:
            return text
        word = match.group(0)
        if word.isupper() and len(word) > 1:
            return text
        if word.lower() not in _FUNCTION_WORDS and (
            word == "I" or self.upper_counts[word.lower()] > self.lower_counts[word.lower()]
        ):
            return text
        return word.lower() + text[len(word) :]

    def lower_title(self, heading: str) -> str:
        """A Title Case heading as running text ("Tags and Tag Pages" → "tags and tag pages")."""
        return " ".join(self.lower_first(word) for word in heading.split())


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
            and not _IMPERATIVE_START.match(sentence)
            and not re.match(r"(For example|For instance|E\.g\.)", sentence)
        )

    def false_edit(self, sentence: str, rng: random.Random) -> tuple[str, str] | None:
        """A meaning-changing edit of a true sentence and its kind, or None when none applies."""
        edits = []
        number = _NUMBER.search(sentence)
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
        negated = self._negate(sentence)
        if negated:
            edits.append(("negation", negated))
        return rng.choice(edits) if edits else None

    @staticmethod
    def _negate(sentence: str) -> str | None:
        best = None
        for pattern, replacement in _NEGATIONS:
            match = re.search(pattern, sentence)
            if match and (best is None or match.start() < best[0].start()):
                best = (match, replacement)
        if best is None:
            return None
        match, replacement = best
        return sentence[: match.start()] + replacement + sentence[match.end() :]

    # ---------------------------------------------------------------- question forms
    def _subject(self, subject: str) -> str | None:
        subject = _TRAILING_ADVERB.sub("", subject)
        if _SUBJECT_BAN.search(subject):
            return None
        if any(p.match(subject) for p in (_PRONOUN_START, _CLAUSE_START, _IMPERATIVE_START)):
            return None
        if n_words(subject) > self.params["max_subject_words"]:
            return None
        if subject in ("You", "Your"):
            return {"You": "I", "Your": "my"}[subject]
        return self.vocab.lower_first(to_first_person(subject))

    def yes_no_question(self, sentence: str) -> tuple[str, bool] | None:
        """("Can I …?", answer_is_yes) by moving the auxiliary verb to the front."""
        match = _AUX_QUESTION.match(sentence)
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
        clause = _LEAD_IN.sub("", sentence)
        clause = clause[0].upper() + clause[1:]
        questions = []
        for question in (self._wh_question(clause, rng), self._subject_question(clause, rng)):
            if question and question.count("(") == question.count(")"):
                question = tidy(_TRAILING_ADVERB.sub("", question[:-1]) + "?") if question.endswith("?") else question
                if question not in questions:
                    questions.append(question)
        return questions

    def _wh_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := _TO_GOAL.match(sentence) or _USE_TO.match(sentence):
            return f"How do I {to_first_person(match['goal'])}?"
        if match := _NAMED_ITEM.match(sentence):
            name = match["name"]
            return f"What {'are' if name.endswith('s') else 'is'} {name}?"
        if (match := _WHERE.match(sentence)) and (subject := self._subject(match["subj"])):
            return f"Where can I find {subject}?"
        if match := _RECOMMEND.match(sentence):
            return f"What does Kaggle recommend {match['when']} {to_first_person(match['cond'])}?"
        if match := _IF_COND.match(sentence):
            lead = "What should I do if" if _IMPERATIVE.match(match["rest"]) else "What happens if"
            return f"{lead} {to_first_person(match['cond'])}?"
        if match := _ONCE.match(sentence):
            return f"What happens {match['when'].lower()} {to_first_person(match['cond'])}?"
        if match := _NEED_TO.match(sentence):
            return f"What do I need to do {match['purpose']} {to_first_person(match['goal'])}?"
        if match := _YOU_CAN.match(sentence):
            lead = "How can I" if match["how"] in ("by", "using", "with", "via", "through") else "Where can I"
            act = re.sub(r"^(also|then|even|simply|easily|always|now|still) ", "", match["act"])
            return f"{lead} {to_first_person(_TRAILING_ADVERB.sub('', act))}?"
        if match := _WHO_CAN.match(sentence):
            return f"Who {match['modal']} {to_first_person(match['act'])}?"
        if match := _HOW_MANY.match(sentence):
            return f"How many {match['what']} are there?"
        if (match := _BECAUSE.match(sentence)) and (inverted := self.yes_no_question(match["main"] + ".")):
            return f"Why {self.vocab.lower_first(inverted[0])}"
        if question := self._pattern_question(sentence, rng):
            return question
        if match := _DEFINITION.match(sentence):
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
        match = _AUX_QUESTION.match(sentence) or _CAPABILITY.match(sentence)
        subject = self._subject(match["subj"]) if match else None
        if subject is None or subject in ("I", "my") or n_words(subject) < 2:
            return None
        return self._pick(self.params["subject_templates"], rng, subject=subject)

    def _pattern_question(self, sentence: str, rng: random.Random) -> str | None:
        if match := _CAPABILITY.match(sentence):
            subject = self._subject(match["subj"])
            if subject:
                verb = match["verb"]
                do = "does" if verb.endswith("s") and subject not in ("I",) else "do"
                lemma = _lemma(verb) if verb.endswith("s") else verb
                first = match["rest"].split()[0].lower()
                if lemma in ("allow", "let", "enable", "help") and first in _OBJECTS:
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
        if _IMPERATIVE_START.match(heading):
            return f"How do I {to_first_person(topic)}?"
        if topic.split()[0].endswith("ing"):
            return self._pick(self.params["activity_templates"], rng, topic=topic)
        return self._pick(self.params["topic_templates"], rng, topic=topic)

    @staticmethod
    def topic_answer(chunk: dict, statements: list[str]) -> str | None:
        """The chunk's first statement that names the section's topic (a word of its heading)."""
        if not chunk.get("heading_path"):
            return None
        stems = {w.lower()[:5] for w in _WORD.findall(chunk["heading_path"][-1]) if len(w) >= 4}
        for sentence in statements:
            shared = stems & {w.lower()[:5] for w in _WORD.findall(sentence)}
            if len(shared) >= min(2, len(stems)) and shared and not _PRONOUN_START.match(sentence):
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
