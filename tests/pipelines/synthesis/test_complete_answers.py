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
from kaggle_qa.pipelines.synthesis.teachers.units import blocks, incomplete_answer, lead_in_units, setting_units

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
