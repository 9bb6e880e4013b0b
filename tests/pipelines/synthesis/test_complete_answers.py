"""Open answers carry the whole answer (issue 21): a lead-in with its list or command, a setting
with its default, a how-to's steps; never a bare lead-in, never a label template's phrase; the
templates name the domain they are given."""

from __future__ import annotations

import random

import pytest

from kaggle_qa.domain import Domain
from kaggle_qa.pipelines.synthesis.audit import label_phrase, open_answer_audit, open_answer_phrases, shortcut_audit
from kaggle_qa.pipelines.synthesis.datasheet import datasheet_record
from kaggle_qa.pipelines.synthesis.filters import filter_rows
from kaggle_qa.pipelines.synthesis.nodes import render_teacher_prompt
from kaggle_qa.pipelines.synthesis.teachers.offline import OfflineTeacher
from kaggle_qa.pipelines.synthesis.teachers.units import (
    blocks,
    incomplete_answer,
    lead_in_units,
    sentence_paragraphs,
    setting_units,
)

from .conftest import PROJECT_ROOT

CLICK = Domain("Click", "the Click documentation", "Click users", "https://click.palletsprojects.com/", licence="BSD-3-Clause")

# Sphinx-like chunk texts as ingestion writes them: one paragraph or list item a line, code fenced.
SPHINX = [
    ("pipeline", ["Item Pipeline"],
     "After an item has been scraped by a spider, it is sent to the Item Pipeline which processes it "
     "through several components that are executed sequentially.\n"
     "Typical uses of item pipelines are:\n"
     "- cleansing HTML data\n"
     "- validating scraped data (checking that the items contain certain fields)\n"
     "- checking for duplicates (and dropping them)\n"
     "- storing the scraped item in a database"),
    ("tutorial", ["Tutorial", "Storing the scraped data"],
     "The simplest way to store the scraped data is by using Feed exports.\n"
     "To dump into a JSON file:\n"
     "```\n"
     "scrapy crawl quotes -O quotes.json\n"
     "```\n"
     "That will generate a quotes.json file containing all scraped items, serialized in JSON."),
    ("settings", ["Settings", "FEED_EXPORT_ENCODING"],
     "Default: None\n"
     "The encoding to be used for the feed. If unset or set to None (default) it uses UTF-8 for "
     "everything except JSON output."),
    ("options", ["Options", "Multiple Options"],
     "To make an option accept several values, pass multiple=True to the decorator. Then read the "
     "values from the tuple that the function receives. Finally, join them with a comma.\n"
     "Click checks each value against the option's type."),
    ("commands", ["Commands", "Long Lists"],
     "Commands are registered on groups and run by name from the shell.\n"
     "The available commands are:\n"
     + "\n".join(f"- command{i} does task number {i} of the long list of tasks" for i in range(30))),
]


def sphinx_chunks() -> list[dict]:
    return [
        {"chunk_id": f"s{i}", "url": f"https://click.example/{page}.html", "title": path[0], "heading_path": path,
         "text": text, "n_words": len(text.split())}
        for i, (page, path, text) in enumerate(SPHINX)
    ]


def open_rows(params, domain=CLICK, version="v3"):
    chunks = sphinx_chunks()
    teacher = OfflineTeacher(chunks, params["offline"], params["seed"], domain)
    rows = teacher.generate(chunks, params["versions"][version], version)
    return rows, {r["instruction"]: r["output"] for r in rows if r["task_type"] == "extractive_qa"}


def test_a_lead_in_is_answered_with_its_list(params):
    _, answers = open_rows(params)
    answer = answers["What are typical uses of item pipelines?"]
    assert answer.startswith("Typical uses of item pipelines are:\n")
    for item in ("cleansing HTML data", "validating scraped data", "checking for duplicates", "storing the scraped item"):
        assert item in answer


def test_a_lead_in_is_answered_with_the_command_it_introduces(params):
    _, answers = open_rows(params)
    answer = answers["How do I dump into a JSON file?"]
    assert "scrapy crawl quotes -O quotes.json" in answer and answer.count("```") == 2


def test_a_setting_is_answered_with_its_default_and_meaning(params):
    _, answers = open_rows(params)
    for question in ("What does the FEED_EXPORT_ENCODING setting do?", "What is the default value of the FEED_EXPORT_ENCODING setting?"):
        assert "Default: None" in answers[question] and "The encoding to be used for the feed." in answers[question]


def test_a_how_to_is_answered_with_all_its_steps(params):
    _, answers = open_rows(params)
    answer = answers["How do I make an option accept several values?"]
    assert "pass multiple=True" in answer and "Then read the values" in answer and "Finally, join them" in answer
    assert "Click checks" not in answer  # a sentence about the domain is no step, though "Click" is a verb


def test_no_open_answer_is_a_bare_lead_in_nor_a_cut_list(params):
    for version in ("v1", "v2", "v3"):
        rows, answers = open_rows(params, version=version)
        assert answers
        for question, answer in answers.items():
            assert not answer.rstrip().endswith(":"), (question, answer)
            assert incomplete_answer(answer, params["offline"]["answer_max_words"], params["offline"]["answer_max_lines"]) is None
        # the 30-command list is longer than an answer may be: its lead-in is asked about nowhere
        assert not any("The available commands are" in r["output"] for r in rows if r["task_type"] == "extractive_qa")


def test_units_keep_code_whole_and_do_not_cut_lists():
    text = "Install it:\n```\npip install click\npip install rich\n```\nThen:\n- one\n- two"
    assert [b.kind for b in blocks(text)] == ["para", "code", "para", "list"]
    units = lead_in_units(text, 80, 12)
    assert [u.text for u in units] == ["Install it:\n```\npip install click\npip install rich\n```", "Then:\n- one\n- two"]
    assert lead_in_units("Long:\n" + "\n".join(f"- item {i}" for i in range(20)), 80, 12) == []
    # a list the cleaner flattened into plain lines: the lines up to the first line of running prose
    flat = lead_in_units("Some types of leakage include:\nLeaking test data\nLeaking labels\nThis ends it.", 80, 12)
    assert flat[0].text == "Some types of leakage include:\nLeaking test data\nLeaking labels"
    [setting] = setting_units("MAX_SIZE\nDefault: 1024\nThe largest size accepted.", None, 80, 12)
    assert setting.name == "MAX_SIZE" and setting.default == "1024" and "The largest size accepted." in setting.text


def test_label_phrases_never_reach_an_open_answer(params, chunks):
    phrases = open_answer_phrases(params)
    # the offline teacher's own rows: its NLI phrase only ever follows its label
    rows = OfflineTeacher(chunks, params["offline"], params["seed"]).generate(chunks, params["versions"]["v1"], "v1")
    neutral = [r for r in rows if r["task_type"] == "nli" and r["label"] == "neutral"]
    assert neutral and all(r["output"].startswith("Neutral.") for r in neutral)
    assert not [r["output"] for r in rows if r["task_type"] == "extractive_qa" and label_phrase(r["output"], phrases)]
    # any teacher's open answer in a label's form is quarantined and counted by the audit
    leaked = [
        {"input": chunks[0]["text"], "instruction": "What does the MAX_SIZE setting do?", "task_type": "extractive_qa",
         "output": "The MAX_SIZE setting does not say whether this is the case.", "chunk_id": "chunk00"},
        {"input": chunks[0]["text"], "instruction": "What are rolling leaderboards?", "task_type": "extractive_qa",
         "output": "Neutral. The context does not say whether this is the case.", "chunk_id": "chunk00"},
        {"input": chunks[0]["text"], "instruction": "What are typical uses of leaderboards?", "task_type": "extractive_qa",
         "output": "Typical uses of leaderboards are:", "chunk_id": "chunk00"},
    ]
    audit = open_answer_audit(leaked, phrases)
    assert audit["label_phrases"] == 2 and audit["ending_with_colon"] == 1
    kept, dropped = filter_rows(leaked, "v3", params["versions"]["v3"], params["filters"],
                                {"chunk00": chunks[0]["text"]}, label_phrases=phrases)
    assert kept == [] and {d["reason"].split(" (")[0] for d in dropped} == {
        "label phrase in an open answer", "open answer is a lead-in"}
    assert not shortcut_audit({"v3": leaked}, params["audit"], 0, phrases)["versions"]["v3"]["passes"]
    assert label_phrase("No Free Hunch is a blog.", phrases) is None  # a name, not a label


def test_the_domain_is_what_every_row_and_prompt_names(params):
    for version in ("v1", "v2", "v3"):
        rows, _ = open_rows(params, version=version)
        assert rows and not [r for r in rows if "kaggle" in (r["instruction"] + r["output"]).lower()]
    for name in ("synthesis_v1", "synthesis_v2", "synthesis_v3"):
        template = (PROJECT_ROOT / "conf/base/prompts" / f"{name}.txt").read_text()
        prompt = render_teacher_prompt(template, sphinx_chunks()[0], params["versions"]["v3"], CLICK)
        assert "Kaggle" not in prompt and "the Click documentation" in prompt
    record = datasheet_record({"v1": [], "v2": [], "v3": []}, {}, {"teacher": "offline"},
                              {"test": [], "train": []}, params, CLICK)
    assert record["title"].startswith("Click") and "Kaggle" not in str(record["table5"])
    assert record["table5"]["data_source"] == CLICK.docs_url and "BSD-3-Clause" in record["table5"]["licence"]


def test_templates_with_the_domain_name_it(params):
    """The topic templates carry the domain's name: 'I'm new to Click.', never another product's."""
    chunk = {"chunk_id": "t", "url": "u", "title": "Parameters", "heading_path": ["Parameters", "Parameter Names"],
             "text": "Parameter names are derived from the option's long name. The name is lower-cased."}
    teacher = OfflineTeacher([chunk], params["offline"], 0, CLICK)
    assert any("Click" in t for t in teacher.params["topic_templates"])
    assert not any("{domain}" in t or "{docs_title}" in t for key, v in teacher.params.items() if key.endswith("_templates") for t in v)
    unnamed = OfflineTeacher([chunk], params["offline"], 0)  # no domain: no template that would name one
    assert all("{" not in t.replace("{topic}", "").replace("{subject}", "").replace("{statement}", "")
               .replace("{statement_lower}", "").replace("{hypothesis}", "")
               for key, v in unnamed.params.items() if key.endswith("_templates") for t in v)


def test_recommend_questions_name_the_docs(params, chunks):
    teacher = OfflineTeacher(chunks, params["offline"], 0, CLICK)
    asked = teacher.extractive_questions("We recommend reviewing the example metric before you begin coding.", random.Random(1))
    assert "What does the Click documentation recommend before I begin coding?" in asked


def test_a_count_question_keeps_its_whole_noun(params, chunks):
    """ "There are two ways to invoke a command:" asks how many ways to invoke a command, not
    "How many ways to are there?" (" in" of " invoke" once ended the noun)."""
    teacher = OfflineTeacher(chunks, params["offline"], 0, CLICK)
    assert teacher.extractive_questions("There are two ways to invoke a command.", random.Random(0)) == [
        "How many ways to invoke a command are there?"
    ]


# A how-to section as Sphinx docs write it: the topic sentence, then the option that answers
# (after a lead-in and an "Example:" caption), then a paragraph on something else.
MULTIPLE = {
    "chunk_id": "m", "url": "https://click.example/options.html", "title": "Options",
    "heading_path": ["Options", "Multiple Options"], "n_words": 70,
    "text": "Similarly to `nargs`, there is also the case of wanting to support a parameter being provided "
            "multiple times and have all the values recorded – not just the last one. For instance, "
            "`git commit -m foo -m bar` would record two lines for the commit message. This can be "
            "accomplished with the `multiple` flag:\n"
            "Example:\n"
            "```\n@click.option('--message', '-m', multiple=True)\ndef commit(message):\n    click.echo(message)\n```\n"
            "Choices are checked against the option's type when the command runs.",
}


def _open_answers(params, chunk, scope):
    offline = params["offline"] | {"answer_scope": scope}
    teacher = OfflineTeacher([chunk], offline, 0, CLICK)
    rows = teacher.generate([chunk], params["versions"]["v3"], "v3")
    return {r["instruction"]: r["output"] for r in rows if r["task_type"] == "extractive_qa"}


def test_a_passage_answer_goes_on_to_the_example_that_answers(params):
    """The section's topic question is answered with its opening passage: the sentences of the
    paragraph and the option's code after the lead-in and its "Example:" caption, not the next
    paragraph; with ``answer_scope: sentence`` the code is never reached."""
    passages = _open_answers(params, MULTIPLE, "passage")
    topic = [a for q, a in passages.items() if "multiple options" in q.lower()]
    assert topic, passages
    assert topic[0].startswith("Similarly to `nargs`") and "multiple=True" in topic[0] and topic[0].count("```") == 2
    assert "Example:" in topic[0] and "Choices are checked" not in topic[0]
    sentences = _open_answers(params, MULTIPLE, "sentence")
    assert not any(a.startswith("Similarly to") and "multiple=True" in a for a in sentences.values())


def test_a_lead_in_reaches_its_block_through_a_caption():
    [chained, caption] = lead_in_units(MULTIPLE["text"], 80, 12)
    assert chained.anchor == "This can be accomplished with the `multiple` flag:"
    assert chained.text.splitlines()[1] == "Example:" and "multiple=True" in chained.text
    assert caption.anchor == "Example:"
    # a caption that is a sentence of its own does not chain: "Note the following:" is a lead-in with no block
    assert [u.anchor for u in lead_in_units("Use it like this:\nNote the following important point here:\n- one", 80, 12)] == [
        "Note the following important point here:"]


def test_sentence_paragraphs_number_the_blocks():
    text = "One. Two.\nThree.\n```\ncode\n```\nFour.\n- five\n- six"
    assert sentence_paragraphs(text) == [0, 0, 1, 4, 5, 6]


def test_like_worded_questions_with_different_answers_are_both_kept(params):
    """The near-duplicate rule drops a like-worded question with the same answer only: two
    templated questions about different topics are two questions."""
    text = "Input streams are read by the test runner. Command aliases map short names to commands."
    rows = [
        {"input": text, "instruction": q, "output": a, "task_type": "extractive_qa", "chunk_id": "c", "url": "u", "teacher": "t"}
        for q, a in [("What should I know about input streams?", "Input streams are read by the test runner."),
                     ("What should I know about command aliases?", "Command aliases map short names to commands."),
                     ("What should I know about the input streams?", "Input streams are read by the test runner.")]
    ]
    kept, dropped = filter_rows(rows, "v3", params["versions"]["v3"], params["filters"], {"c": text})
    assert [r["instruction"] for r in kept] == [rows[0]["instruction"], rows[1]["instruction"]]
    assert dropped[0]["reason"] == "near-duplicate question" and dropped[0]["of"] == rows[0]["instruction"]
