"""One `domain` parameter names the docs everywhere: no product string in src/ names Kaggle.

Every string literal (docstrings included) and comment of every module under src/ is read with
Python's tokenizer; "kaggle" in any case is a hit, except the package's own name (kaggle_qa,
kaggle-qa) and the module that builds the vendored Kaggle snapshot. Kaggle stays the default
domain in conf/base (parameters.yml `domain:`), and the vendored data may name it.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest
import yaml

from kaggle_qa.domain import Domain, chat_greeting, fill, fill_prompt, fill_templates, refusal_message

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SRC = PROJECT_ROOT / "src" / "kaggle_qa"
PACKAGE_NAME = re.compile(r"kaggle[_-]qa", re.I)
NAME = re.compile(r"kaggle", re.I)
# The module that builds the vendored Kaggle snapshot (ingestion; it is about that data).
ALLOWED = {"pipelines/ingestion/snapshot.py"}
# Modules that still name Kaggle in a docstring or message, with their owners (issue 21): shown
# as xfail until cleaned; then take them off this list.
PENDING: dict[str, str] = {}  # modules allowed to fail while being fixed (none)


def product_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal and comment of a Python module."""
    found = []
    with path.open("rb") as handle:
        for token in tokenize.tokenize(handle.readline):
            if token.type in (tokenize.STRING, tokenize.COMMENT) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                found.append((token.start[0], token.string))
    return found


def kaggle_hits(path: Path) -> list[str]:
    return [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {text.strip()[:100]}"
        for line, text in product_strings(path)
        if NAME.search(PACKAGE_NAME.sub("", text))
    ]


MODULES = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(m, marks=pytest.mark.xfail(reason=f"still names Kaggle: {PENDING[m]}", strict=False)) if m in PENDING else m
        for m in MODULES
        if m not in ALLOWED
    ],
)
def test_no_string_or_comment_in_src_names_kaggle(module):
    hits = kaggle_hits(SRC / module)
    assert not hits, "name the docs through the `domain` parameter (kaggle_qa.domain), not in code:\n" + "\n".join(hits)


def test_the_grep_finds_a_name_in_strings_and_comments_but_not_the_package(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        'from kaggle_qa.text import tidy  # kaggle_qa is the package\n'
        'A = "kaggle-qa ask"\n'
        'B = f"Ask about the {x}"\n'
        '# an example from the Kaggle docs\n'
        'C = "what Kagglers ask"\n'
    )
    lines = [hit.split(":")[1] for hit in kaggle_hits_at(module)]
    assert lines == ["4", "5"]


def kaggle_hits_at(path: Path) -> list[str]:
    return [f"{path}:{line}: {text}" for line, text in product_strings(path) if NAME.search(PACKAGE_NAME.sub("", text))]


# ------------------------------------------------------------------ the Domain value

def base_domain() -> Domain:
    return Domain.from_params(yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text()))


CLICK = Domain("Click", "the Click documentation", "Click users", "https://click.palletsprojects.com/", licence="BSD-3-Clause")


def test_conf_base_keeps_kaggle_as_the_default_domain():
    domain = base_domain()
    assert domain.name == "Kaggle" and "Kaggle" in domain.docs_title
    assert refusal_message(domain) == "The Kaggle documentation does not cover this question, so I cannot answer it from the docs."


def test_templates_prompts_and_messages_take_the_domain():
    assert fill("True or False: according to {docs_title}, {statement_lower}.", CLICK) == (
        "True or False: according to the Click documentation, {statement_lower}."
    )
    assert fill_templates(["I'm new to {domain}. {topic}?", "What do {user_noun} ask about {topic}?"], CLICK) == [
        "I'm new to Click. {topic}?"  # no user_noun: its template is left out
    ]
    assert fill_prompt("About $docs_title, for $audience: $n", CLICK, n=3) == "About the Click documentation, for Click users: 3"
    assert fill_prompt("About $docs_title.", None) == "About the documentation."
    assert refusal_message(CLICK).startswith("The Click documentation does not cover")
    assert "the Click documentation" in chat_greeting(CLICK)
    with pytest.raises(ValueError, match="user_noun"):
        fill("{user_noun} ask", CLICK)


def test_bad_domain_parameters_name_the_key():
    with pytest.raises(ValueError, match=r"domain\.docs_title"):
        Domain.from_params({"domain": {"name": "X", "docs_title": "", "audience": "a", "docs_url": "u"}})
    with pytest.raises(ValueError, match="unknown key"):
        Domain.from_params({"name": "X", "docs_title": "t", "audience": "a", "docs_url": "u", "title": "oops"})
    with pytest.raises(ValueError, match="missing"):
        Domain.from_params({"name": "X"})
