"""The shortcut audit: no-reading baselines against the majority rate, on planted cues and on the
default synthesis of the bundled docs snapshot."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from kaggle_qa.pipelines.ingestion.nodes import chunk_pages, clean_pages
from kaggle_qa.pipelines.synthesis.audit import audit_markdown, open_answer_phrases, shortcut_audit, statement_of
from kaggle_qa.pipelines.synthesis.nodes import filter_candidates, generate_candidates, split_chunks

from .conftest import PROJECT_ROOT

AUDIT = {"max_gain": 0.05, "min_rows": 100, "folds": 5, "repeats": 2}
SITE = PROJECT_ROOT / "data/01_raw/kaggle_docs_site"


def planted_rows(n: int, cue: bool) -> list[dict]:
    """True/false rows whose true statements are the context's sentence word for word (cue) or
    whose label is a coin flip independent of every surface property (no cue)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        fact = f"Quota {i} resets on day {i % 7} of the week."
        truth = i % 2 == 0
        shown = fact if (truth and cue) else f"Quota {i} resets on day {(i + 3) % 7} of the week."
        if not cue:
            truth = rng.random() < 0.5
        label = "true" if truth else "false"
        rows.append({"input": fact, "instruction": f"True or False: {shown}", "output": f"{label.capitalize()}.",
                     "task_type": "true_false", "label": label})
    return rows


def test_a_planted_verbatim_cue_fails_and_no_cue_passes():
    record = shortcut_audit({"cued": planted_rows(160, True), "clean": planted_rows(160, False)}, AUDIT, 0)
    cued = record["versions"]["cued"]["tasks"]["true_false"]
    assert cued["baselines"]["verbatim"] == pytest.approx(1.0)
    assert "verbatim" in cued["failing"] and not record["versions"]["cued"]["passes"]
    clean = record["versions"]["clean"]["tasks"]["true_false"]
    assert all(acc <= clean["majority"] + AUDIT["max_gain"] for acc in clean["baselines"].values()), clean
    assert record["versions"]["clean"]["passes"]
    table = "\n".join(audit_markdown(record))
    assert "| cued | true_false | 160 |" in table and "Versions failing the audit: cued" in table


def test_a_new_word_in_false_statements_fails_the_novel_words_baseline():
    """The cue the older generator had: true statements reuse the context's words (a paraphrase
    that drops a word), false ones bring in a word the context never uses (an antonym). Neither
    is verbatim, so the verbatim baseline cannot see it; the novel-words baseline must."""
    rows = []
    for i in range(160):
        context = f"Quota {i} of the team resets daily on the public leaderboard page."
        truth = i % 2 == 0
        shown = (f"Quota {i} of the team resets daily on the leaderboard page." if truth
                 else f"Quota {i} of the team resets daily on the private leaderboard page.")
        label = "true" if truth else "false"
        rows.append({"input": context, "instruction": f"True or False: {shown}", "output": f"{label.capitalize()}.",
                     "task_type": "true_false", "label": label})
    result = shortcut_audit({"cued": rows}, AUDIT, 0)["versions"]["cued"]["tasks"]["true_false"]
    assert result["baselines"]["verbatim"] == pytest.approx(0.5, abs=0.05)
    assert result["baselines"]["novel_words"] == pytest.approx(1.0)
    assert "novel_words" in result["failing"]


def test_small_task_types_are_shown_not_judged():
    record = shortcut_audit({"small": planted_rows(40, True)}, AUDIT, 0)
    task = record["versions"]["small"]["tasks"]["true_false"]
    assert task["baselines"]["verbatim"] == pytest.approx(1.0) and not task["judged"]
    assert record["versions"]["small"]["passes"]


def test_statements_lose_their_template():
    assert statement_of("True or False: GPUs are free.") == "GPUs are free."
    assert statement_of("Is it true that GPUs are free?") == "GPUs are free"
    assert statement_of('Hypothesis: "GPU sessions last 30 hours." Entailment, contradiction, or neutral?') == (
        "GPU sessions last 30 hours."
    )
    assert statement_of("Can I use a GPU?") == "Can I use a GPU"
    # the forms other teachers use, which the offline teacher now writes too
    assert statement_of("Is it accurate to say that GPUs are free?") == "GPUs are free"
    assert statement_of("Assess the statement: GPUs are free.") == "GPUs are free."
    assert statement_of("GPUs are free. (True/False)") == "GPUs are free."
    assert statement_of("Indicate whether the following statement is true or false: GPUs are free.") == "GPUs are free."
    assert statement_of("GPUs are free.") == "GPUs are free."
    # a quoted UI label inside a statement is part of it, not the statement
    assert statement_of('True or False: Click “Create Competition” to finish the draft.') == (
        "Click “Create Competition” to finish the draft."
    )


@pytest.fixture(scope="module")
def snapshot_chunks() -> list[dict]:
    """doc_chunks of the bundled docs snapshot, cleaned and chunked as the ingestion pipeline does."""
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text())["ingestion"]
    pages = []
    for path in sorted(SITE.rglob("*.html")):
        url = "https://www.kaggle.com/" + str(path.relative_to(SITE).with_suffix(""))
        html = path.read_text(encoding="utf-8")
        pages.append({"url": url, "final_url": url, "title": "", "html": html, "sha256": ""})
    chunks, _ = chunk_pages(clean_pages(pages, params), params)
    return chunks


def test_default_synthesis_passes_its_own_shortcut_audit(snapshot_chunks, base_params):
    split = split_chunks(snapshot_chunks, base_params)
    domain = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters.yml").read_text())["domain"]
    candidates, _ = generate_candidates(snapshot_chunks, split, {}, None, base_params, domain)
    qa_v1, qa_v2, qa_v3, _, _ = filter_candidates(candidates, snapshot_chunks, base_params)
    record = shortcut_audit({"v1": qa_v1, "v2": qa_v2, "v3": qa_v3}, base_params["audit"], base_params["seed"],
                            open_answer_phrases(base_params))
    judged = [(v, t) for v, version in record["versions"].items() for t, r in version["tasks"].items() if r["judged"]]
    assert ("v3", "true_false") in judged
    for version, result in record["versions"].items():
        assert result["passes"], (version, result["failing"], result["tasks"])
        # open answers: complete (none ends in ":"), none in a label's form; some carry a list
        assert result["open_answers"]["ending_with_colon"] == result["open_answers"]["label_phrases"] == 0
    # v2's true/false rows (about 80 from this snapshot, under the judged minimum of 100) are held
    # to the same bound anyway
    v2 = record["versions"]["v2"]["tasks"]["true_false"]
    assert v2["rows"] >= 60
    assert all(acc <= v2["majority"] + base_params["audit"]["max_gain"] for acc in v2["baselines"].values()), v2
