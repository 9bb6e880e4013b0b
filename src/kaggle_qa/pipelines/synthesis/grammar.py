"""English for the offline teacher: docs lines as plain sentences, second person turned into
the asker's first person, verb forms, negation, and the corpus vocabulary (casing, numbers,
swappable terms). No task or recipe logic lives here."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from kaggle_qa.text import split_sentences



SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“‘(])")
WORD = re.compile(r"[A-Za-z][A-Za-z’'\-]*")
NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "fifty hundred thousand million"
).split()
NUMBER = re.compile(  # group 1: digits (not part of a version, path or id), group 2: a number word
    r"(?<![\w./-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w./]|-\w)|\b(" + "|".join(NUMBER_WORDS) + r")\b"
)
PRONOUN_START = re.compile(r"^(It|This|That|These|Those|They|There|Here|He|She|We|Such|Both|Each of these)\b")
CLAUSE_START = re.compile(
    r"^(If|When|Once|To|For|In|After|Before|While|Although|Though|As|Because|Since|With|By|On|At|"
    r"From|Note|Also|However|Then|Otherwise|Unless|Instead|Additionally|Alternatively|Finally|Similarly)\b"
)
# Negation edits: the earliest match in the sentence is flipped (longer patterns first).
NEGATIONS = (
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
AUX_QUESTION = re.compile(
    r"^(?P<subj>[A-Z][^,;:()]{1,70}?) (?P<aux>can|cannot|can't|is|isn't|are|aren't|will|won't|should|"
    r"does|do|has|have)(?P<neg> not)?\b (?P<rest>[^?]+)\.$"
)
TO_GOAL = re.compile(r"^To (?P<goal>[a-z][^,]{5,90}), (?P<rest>.{10,})$")
IF_COND = re.compile(r"^If (?P<cond>(?:you|your)\b[^,]{5,90}), (?P<rest>.{10,})$")
IMPERATIVE = re.compile(
    r"^(you should|you can|you need|you must|you will need|please|make sure|go|click|ensure|try|check|"
    r"use|contact|visit|navigate|see|run|select|open|reach out|consider)\b",
    re.I,
)
DEFINITION = re.compile(
    r"^(?P<subj>(?:The |A |An )?[A-Z][\w\-’' ]{1,50}?) (?P<be>is|are) (?P<rest>(?:a|an|the|one of|"
    r"designed|used|intended|meant)\b.+)$"
)
CAPABILITY = re.compile(
    r"^(?P<subj>(?:The |A |An |Your )?[A-Z][\w\-’' ]{1,50}?) (?P<verb>allows?|lets?|enables?|helps?|"
    r"gives?|provides?|offers?|contains?|includes?|supports?|shows?|displays?|requires?|lists?|involves?|"
    r"tracks?|consists? of|describes?|determines?|stores?|measures?|covers?|features?|controls?|defines?)\b "
    r"(?P<rest>.+)$"
)
# "`tool competitions download -c [COMPETITION]` downloads files …": a command and what it does.
COMMAND_DOES = re.compile(r"^`(?P<command>[^`]{3,80})` (?P<verb>[a-z]+s) (?P<rest>[^`]{5,90})\.$")
# "The easiest way to interact with the API is via our CLI."
BEST_WAY = re.compile(
    r"^The (?P<adj>easiest|best|simplest|fastest|quickest|recommended|only) way to (?P<goal>[a-z][^,]{5,80}?) is\b"
)
# "You will need at least one sample submission … in order to launch your competition."
NEED_FOR = re.compile(
    r"^(?:You|you) (?:will )?need (?P<what>(?!to\b).{3,120}?) (?:in order )?to (?P<goal>[a-z][^,]{5,70})\.$"
)
# "To submit a new prediction use the Submit Prediction button." (no comma after the goal)
TO_GOAL_BARE = re.compile(
    r"^To (?P<goal>[a-z][^,]{5,70}?),? (?P<rest>(?:use|click|go|select|navigate|visit|open|run|choose|press)\b.{5,})$"
)
# "Using Notebooks, …, is a powerful way to work with your collaborators on a Dataset."
WAY_TO = re.compile(r"^[A-Z`“][^;]{2,120}? (?:is|are) (?:a|an|one) (?:[a-z]+ ){0,2}way to (?P<goal>[a-z][^,]{5,70})\.$")
# "On Windows, the default location is $PYTHON_HOME/Scripts."
SCOPED_WHAT = re.compile(
    r"^(?P<prep>On|In|For) (?P<scope>[A-Z][^,]{2,40}), the (?P<what>[a-z][\w ]{2,40}?) (?P<be>is|are) (?P<rest>.{3,})$"
)
# ", by contrast," and the like: an aside inside the main clause, left out when asking about it
ASIDE = re.compile(r",\s(?:by contrast|in contrast|however|meanwhile|in turn|on the other hand|for example|"
                   r"for instance|of course|in general|by default)\s?,", re.I)
YOU_CAN = re.compile(
    r"^You can (?P<act>[a-z][^,]{5,80}?) (?P<how>by|using|with|via|through|from|in|on|at) (?P<rest>.+)$"
)
ONCE = re.compile(r"^(?P<when>Once|After|When|Following|During|Upon) (?P<cond>[^,]{5,90}), (?P<rest>.{10,})$")
NEED_TO = re.compile(
    r"^(?:You|you) (?:must|need to|have to|should|will need to) (?P<act>.+?) "
    r"(?P<purpose>in order to|before|so that) (?P<goal>[^,]+)\.$"
)
_WHO = (r"[Uu]sers|[Pp]articipants|[Hh]osts|[Tt]eams?|[Mm]embers|[Aa]nyone|[Ee]veryone|[Tt]eam [Ll]eaders?|"
        r"[Cc]ollaborators|[Aa]dmins?|[Oo]wners?")


@lru_cache(maxsize=8)
def who_can_pattern(user_noun: str | None = None) -> re.Pattern:
    """"Only team leaders can …" (and "<user_noun> can …", the domain's word for its users)."""
    who = _WHO + (f"|{re.escape(user_noun)}" if user_noun else "")
    return re.compile(rf"^(?:Only )?(?P<who>(?:[A-Z][a-z]+ )?(?:{who})) (?P<modal>can|may) (?P<act>[^,]{{5,90}})\.$")


WHO_CAN = who_can_pattern(None)
HOW_MANY = re.compile(
    r"^There (?:are|is) (?P<num>\d+|two|three|four|five|six|seven|eight|nine|ten) "
    r"(?P<what>[a-z][a-z \-]{2,50}?)(?=[:.,]| (?:that|which|for|of|on|in|you|available)\b)"  # not " in" of " invoke"
)
BECAUSE = re.compile(r"^(?P<main>[A-Z][^,]{10,120}?),? (?:because|since) (?P<reason>.{8,})\.$")
TRAILING_ADVERB = re.compile(
    r"\s+(either|also|easily|simply|directly|quickly|only|even|all|now|here|currently|still|always|often|usually|"
    r"typically|already)$"
)
IMPERATIVE_START = re.compile(
    r"^(?:(?:Then|Next|Now|First|Finally|Simply|Just|Specifically|Instead|Otherwise),? )?(?i:click|Select|Go|Run|Navigate|Make sure|Follow|Choose|Use|Open|Add|Enter|Type|Press|Visit|See|Check|"
    r"Try|Remember|Note|Please|Ensure|Create|Upload|Download|Set|Install|Find|Learn|Read|Take|Keep|Avoid|Be|Do|Don’t|"
    r"Don't|Make|Consider|View|Head|Scroll|Hover|Toggle|Fill|Give|Provide|Write|Specify|Pick|Review|Accept|Submit|"
    r"Join|Invite|Share|Reach out|Contact|Launch|Prepare|Manage|Publish|Explore|Build|Get|Edit|Delete|Import|Export|"
    r"Connect|Enable|Disable|Configure|Attach|Load|Save|Customize|Rename|Merge|Leave|Sign|Have(?= your))\b"
)
# A sentence that leans on the one before it ("So …", "That is why …", "do so", "… thus …"):
# no standalone claim, so neither a true/false statement, a yes/no question nor a paraphrase is
# made of it. The one definition for the offline teacher and the claims module.
LEANS_ON_PREVIOUS = re.compile(
    r"^(?:So|And|But|Or|Then|That is|That’s|That's|This is why|Thus|Hence|Therefore)\b"
    r"|\b(?:do so|thus|hence|therefore|please)\b",
    re.I,
)
# A leading subordinate clause ("Before splitting the data, make sure …"): what follows its comma
# is the main clause, imperative or not.
LEADING_CLAUSE = re.compile(r"^(?:If|When|Once|After|Before|While|Unless|To|For|In|On|At)\b[^,]{3,90}, ")
FUNCTION_WORDS = set(
    "the a an this that these those it its if when once to for in after before while although though as because "
    "since with by on at from also however then otherwise unless instead additionally alternatively finally "
    "similarly some most many each every all any both there here you your we our they their another other "
    "beyond within without during until upon under over into onto again just even only not no yes what which who "
    "how where why my".split()
)
LINK_TARGET = re.compile(r"\s*\((?:https?://|www\.)[^)\s]*\)")
COMMAND_ITEM = re.compile(r"^(?:- )?(?P<command>`[^`]+`): (?P<verb>[a-z]+)\b(?P<rest>.*?)\.?$")
LEAD_IN = re.compile(
    r"^(Additionally|However|Currently|Alternatively|Also|Similarly|In addition(?=,)|In general|In most cases|"
    r"In normal situations|Typically|Generally|Finally|For now|Notice that|Note that|Remember that),? "
)
# "Open Data Spotlights: This series …" (not a title such as "Making Python the Home of Open Data: …")
NAMED_ITEM = re.compile(r"^(?![A-Z][a-z]+ing\b)(?P<name>[A-Z][\w’' &-]{2,40}): (?=[A-Z])")
USE_TO = re.compile(r"^Use (?P<tool>.{3,90}?) to (?P<goal>[a-z][^,]{5,80})\.$")
WHERE = re.compile(
    r"^(?P<subj>(?:The |A |An )?[A-Z][\w\-’' ]{1,50}?),? (?:is|are) (?:accessible|available|located|found) "
    r"(?:from|in|on|at|through|via) "
)
RECOMMEND = re.compile(
    r"^We (?:strongly )?recommend (?P<what>.+?) (?P<when>before|when|if|for) (?P<cond>[^,]{5,80})\.$"
)
OBJECTS = {"you", "users", "participants", "hosts", "teams", "people", "anyone", "everyone", "us"}
SUBJECT_BAN = re.compile(
    r"\b(that|which|who|whom|where|when|if|because|and|or|but|every|each|all|any|most|some|many|other|another|"
    r"must|may|might|should|would|could|need|needs|will|can|cannot|is|are|was|were|be|been|to|do|does|did|not)\b",
    re.I,
)


def imperative_start(text: str, domain_name: str | None = None) -> re.Match | None:
    """IMPERATIVE_START, unless the text starts with the domain's name ("Click checks …" is about
    Click, not an instruction to click)."""
    if domain_name and re.match(rf"{re.escape(domain_name)}(?:[’']s)?\b(?! (?:on|the|a|an|it|this|that|to|and|here)\b)", text):
        return None
    return IMPERATIVE_START.match(text)


def tidy(text: str) -> str:
    """Collapse whitespace and the space the docs sometimes leave before punctuation."""
    text = text.replace("\ufe0f", "").replace("\u200b", "")
    return re.sub(r"\s+([?.!,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()


def as_sentence(line: str) -> str:
    """A docs line as a plain sentence: link targets dropped ("Python Learn (https://…)" →
    "Python Learn"), and a command list item "`cmd`: list things" → "`cmd` lists things."."""
    line = tidy(LINK_TARGET.sub("", line))
    match = COMMAND_ITEM.match(line)
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


def content_words(text: str) -> int:
    """Words of `text` that are no function word (nor "one"): "the second reason" has 2, "the
    answer" and "the biggest one" 1 each."""
    return sum(w.lower().strip("`'\"’") not in FUNCTION_WORDS | {"one", "ones"} for w in text.split())


def base_form(verb: str) -> str:
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
    domain_name: str | None = None  # the docs' product ("… in <domain>." paraphrases), or None

    @classmethod
    def from_chunks(cls, chunks: list[dict], swap_groups: list[list[str]], domain_name: str | None = None) -> Vocabulary:
        lower, upper, numbers, words = Counter(), Counter(), set(), set()
        corpus = "\n".join(chunk["text"] for chunk in chunks)
        for sentence in split_sentences(corpus):
            for position, word in enumerate(WORD.findall(sentence)):
                if word[0].islower():
                    lower[word] += 1
                elif position > 0:
                    upper[word.lower()] += 1
            for match in NUMBER.finditer(sentence):
                (numbers if match.group(1) else words).add(match.group(0))
        groups = [[term for term in group if re.search(rf"\b{re.escape(term)}\b", corpus)] for group in swap_groups]
        return cls(lower, upper, sorted(numbers), sorted(words), [g for g in groups if len(g) > 1], domain_name)

    def lower_first(self, text: str) -> str:
        """Lower-case the first word unless the docs write it capitalised (a name, an acronym)."""
        match = WORD.match(text)
        if not match:
            return text
        word = match.group(0)
        if (word.isupper() and len(word) > 1) or any(c.isupper() for c in word[1:]):
            return text  # an acronym or a name with inner capitals ("SQLite", "BigQuery")
        if word.lower() not in FUNCTION_WORDS and (
            word == "I" or self.upper_counts[word.lower()] > self.lower_counts[word.lower()]
        ):
            return text
        return word.lower() + text[len(word) :]

    def lower_title(self, heading: str) -> str:
        """A Title Case heading as running text ("Tags and Tag Pages" → "tags and tag pages")."""
        return " ".join(self.lower_first(word) for word in heading.split())


def balanced_parentheses(text: str) -> bool:
    """Whether every ")" closes an earlier "(" and every "(" is closed (a rewrite or a question
    cut inside a parenthesis leaves "… data files), we recommend …")."""
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def negate(sentence: str) -> str | None:
    """The sentence with its earliest negation flipped ("can" → "cannot", "is not" → "is"), or None."""
    best = None
    for pattern, replacement in NEGATIONS:
        match = re.search(pattern, sentence)
        if match and (best is None or match.start() < best[0].start()):
            best = (match, replacement)
    if best is None:
        return None
    match, replacement = best
    return sentence[: match.start()] + replacement + sentence[match.end() :]


# A reference to something only the surrounding text names ("this", "such a …", "the last type"):
# no claim or question may rest on it. Questions also may not say "its", "the same" or "the other …".
_REFERENCE_NOUNS = r"(?:type|one|kind|option|step|method|category|way|element|item|part|point)"
# Pointing at the page ("the examples below", "as outlined above", "available here", "There, use
# the search box"): "above"/"below"/"here" closing a phrase, or "above"/"below" after a word that
# points; "below 0.5" and "above the threshold" compare and stay.
_POINTING = (
    r"(?:above|below|here)(?=\s*(?:[,.;:?!)]|$))|"
    r"(?:as|outlined|described|mentioned|shown|listed|examples?|steps|formats|table|list|section|image|"
    r"screenshot|figure|form) (?:above|below)|"
    r"^there(?=,)"
)
DANGLING_REFERENCE = (
    r"this|these|those|it|they|them|the above|the following|the former|the latter|such an?|"
    rf"the (?:first|second|third|last|next|previous) {_REFERENCE_NOUNS}|{_POINTING}"
)
_DANGLING_QUESTION = re.compile(
    rf"\b({DANGLING_REFERENCE}|its|the same|the other {_REFERENCE_NOUNS})\b",
    re.I,
)
# "How many ways are there?": a count of nothing named ("How many types of competitions are there?" names it)
_UNNAMED_COUNT = re.compile(
    r"^How many (?:different )?(?:types|ones|kinds|options|steps|methods|categories|ways) are there\?$", re.I
)
_SUBJECTLESS_CLAUSE = re.compile(r"^What happens ((?:when|if|once|after|before) \w+(?: \w+ly)?)\?$", re.I)
_DO_QUESTION = re.compile(r"^What (?P<aux>do|does) (?P<subject>.+?) (?P<verb>[a-z]+)\??$")
# "What are Click provides two types of metrics?": a definition question whose "subject" is a clause
_CLAUSE_AS_SUBJECT = re.compile(
    r"^What (?:is|are) (?P<subject>.+?\b(?:provides|offers|allows|lets|includes|supports|contains|gives|has|"
    r"uses|requires|shows|displays|lists|makes|means)\b(?! of\b| for\b).*)\?$"  # "uses of X" is a noun
)
_PLURAL_SUBJECTS = {"i", "you", "we", "they", "people", "users", "teams", "hosts", "participants"}


def question_problem(question: str) -> str | None:
    """Why a question does not read like a user's, or None: a word with no antecedent ("this",
    "it", "the first type"), or an auxiliary that disagrees with its subject ("What do restricted
    email list?", "What does users see?")."""
    if match := _DANGLING_QUESTION.search(question.replace("Is it true that", "")):
        return f"dangling reference {match.group(0)!r}"
    if _UNNAMED_COUNT.match(question):
        return "a count of nothing named"
    if match := _SUBJECTLESS_CLAUSE.match(question):
        return f"no subject in {match.group(1)!r}"
    if match := _CLAUSE_AS_SUBJECT.match(question):
        return f"a clause as the subject: {match['subject']!r}"
    if match := _DO_QUESTION.match(question):
        head = match["subject"].split()[-1].lower()
        plural = head in _PLURAL_SUBJECTS or (head.endswith("s") and not head.endswith(("ss", "'s", "’s")))
        if (match["aux"] == "do") != plural:
            return f"agreement: {match['aux']!r} with {match['subject']!r}"
        if match["verb"].endswith("s") and not match["verb"].endswith("ss"):
            return f"agreement: {match['aux']!r} with the verb {match['verb']!r}"
    return None


# Lead-ins (a sentence ending in ":", the colon dropped): questions whose answer is the list,
# command or table that follows. "To dump into a JSON file" → "How do I dump into a JSON file?"
LEAD_TO = re.compile(r"^To (?P<goal>[a-z][^,:]{5,90}?)(?:, (?:run|use|type|do|follow|call|add|write|enter)\b.*)?$")
LEAD_IF_LIKE = re.compile(
    r"^(?:If|When) you(?:[’']d| would)? (?:like|want|need) to (?P<goal>[a-z][^,]{5,90}), .*$"
)
LEAD_STEPS = re.compile(
    r"^(?:Here are |These are |Follow )?(?:the |these )?(?:main |basic )?steps (?:that )?(?:you can follow |you need to "
    r"(?:take|follow) |required |needed )?(?:to|for) (?P<goal>[a-z][^,]{5,90})$",
    re.I,
)
LEAD_LIST = re.compile(
    r"^(?P<what>(?:Some of the |Some |The |Typical |Common |Main |Possible |Example |Other |Several )?"
    r"(?:[a-z]+ )?(?:uses|types|kinds|examples|options|commands|ways|reasons|benefits|features|limits|limitations|"
    r"variations|parameters|arguments|settings|methods|advantages|values|requirements|rules|files|fields)\b"
    r"(?: (?:of|for|to|in|on|that|you can use)\b[^:]{2,70}?)?) (?:include|includes|are|can be|could be)$"
)
LEAD_FIRST_STEP = re.compile(
    r"^The first (?:thing|step) (?:you |to )?(?:typically |usually |need to |should |will )?(?:do|take)?"
    r"(?P<scope> (?:with|in|when|for) [^,]{3,60}?)? is (?:to )?(?P<act>[a-z].{3,80})$"
)
LEAD_FOLLOWING = re.compile(r",?\s*\b(?:the following|as follows|following|below|like this)\b", re.I)
CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


def lead_in_question(lead: str) -> str | None:
    """The question a lead-in (its colon dropped) announces the answer to, or None."""
    if match := LEAD_TO.match(lead):
        return f"How do I {to_first_person(match['goal'])}?"
    if (match := LEAD_IF_LIKE.match(lead)) or (match := LEAD_STEPS.match(lead)):
        return f"How do I {to_first_person(match['goal'])}?"
    if match := LEAD_LIST.match(lead):
        what = match["what"]
        return f"What are {what[0].lower() + what[1:]}?"
    if match := LEAD_FIRST_STEP.match(lead):
        return f"What is the first thing to do{to_first_person(match['scope'] or '')}?"
    return None


def lead_in_as_statement(lead: str) -> str:
    """A lead-in as a plain sentence to ask about ("X supports the following options" → "X
    supports options."): what points at the list is dropped."""
    return tidy(LEAD_FOLLOWING.sub("", lead).rstrip(" :,")) + "."


def setting_questions(name: str) -> list[str]:
    """What a user asks of a setting or parameter: what it does, and its default."""
    label = f"the {name} setting" if CONSTANT_NAME.match(name) else f"`{name}`"
    return [f"What does {label} do?", f"What is the default value of {label}?"]
