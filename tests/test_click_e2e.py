"""The vendored Click manual end to end with `--env click`, as a user would run it on their own docs:
`kedro run --env click` (ingestion over HTTP → offline synthesis → a short training → evaluate, with the
user-question node on a few of Click's questions) and then `kaggle-qa ask --env click`, answering with
citations of Click's pages. Nothing of it may name Kaggle: rows, prompts, report, answers.

The run reads the project's real conf/base + conf/click through a copy (`--conf-source`) whose globals
put data_root in a temporary folder, so it never writes under the project's data/; the only changes
to conf/click are the short budgets below and a random-weight tiny Gemma as the base model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

import pytest
import yaml

from kaggle_qa.domain import Domain

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLICK_URL = "https://click.palletsprojects.com/en/8.1.x/"
QUESTION = "How do I install Click?"

# conf/click's parameters soft-merge over base; these short budgets soft-merge over conf/click's
SHORT = {
    "ingestion": {"crawl": {"max_pages": 8, "log_level": "WARNING"}},
    "train": {"max_train_examples": 24, "max_length": 256, "max_steps": 2, "time_budget_s": None, "epochs": 1,
              "batch_size": 4, "gradient_accumulation_steps": 1, "eval_every_steps": 1, "eval_batch_size": 8,
              "budget_calibration_steps": 0, "train_fit_examples": 8, "checkpoint_every_steps": 1},
    "evaluate": {"limit": 12, "batch_size": 8, "max_new_tokens": 24, "bootstrap": {"resamples": 50}},
    "context_modes": {"limit": 4},
    "assistant": {"dtype": "float32", "max_new_tokens": 24},
}
USER_QUESTIONS = 8  # the first ones of data/01_raw/click_questions.json (a hashed share goes to selection)


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def click_conf_copy(folder: Path, tiny_gemma_path: str) -> Path:
    """conf/base and conf/click copied; click's globals, parameters and catalog with the short overrides."""
    conf = folder / "conf"
    shutil.copytree(PROJECT_ROOT / "conf" / "base", conf / "base")
    shutil.copytree(PROJECT_ROOT / "conf" / "click", conf / "click")
    click = conf / "click"
    assert yaml.safe_load((click / "globals.yml").read_text())["data_root"] == "data/click"
    (click / "globals.yml").write_text(yaml.safe_dump({"data_root": str(folder / "data")}))
    params: dict = {}
    for file in sorted(click.glob("parameters*.yml")):
        params = deep_merge(params, yaml.safe_load(file.read_text()) or {})
        file.unlink()
    (click / "parameters.yml").write_text(yaml.safe_dump(deep_merge(params, SHORT)))
    questions = json.loads((PROJECT_ROOT / "data/01_raw/click_questions.json").read_text())[:USER_QUESTIONS]
    (folder / "click_questions.json").write_text(json.dumps(questions))
    catalog: dict = {}
    for file in sorted(click.glob("catalog*.yml")):
        catalog |= yaml.safe_load(file.read_text()) or {}
        file.unlink()
    catalog["user_questions"]["filepath"] = str(folder / "click_questions.json")
    catalog["base_model"] = {"type": "kaggle_qa.datasets.BaseModelDataset", "source": tiny_gemma_path}
    (click / "catalog.yml").write_text(yaml.safe_dump(catalog))
    return conf


def run(command: list[str], log: Path, timeout: int) -> str:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                        "HF_EVALUATE_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{' '.join(command[:4])} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    return result.stdout


def latest(path: Path) -> Path:
    """The file of the latest version of a versioned dataset folder (<name>/<version>/<name>)."""
    versions = sorted(p for p in path.iterdir() if p.is_dir())
    assert versions, f"no version of {path}"
    return versions[-1] / path.name


KAGGLE = re.compile(r"kaggle(?![-_]qa)", re.IGNORECASE)  # the site, not this tool's name (kaggle-qa, kaggle_qa)


def assert_no_kaggle(what: str, text: str) -> None:
    found = KAGGLE.search(text)
    assert not found, f"{what} names Kaggle: …{text[max(0, found.start() - 200):found.start() + 200]}…"


@pytest.fixture(scope="module")
def click_project(tmp_path_factory, tiny_gemma_path) -> dict:
    folder = tmp_path_factory.mktemp("click_e2e")
    conf = click_conf_copy(folder, tiny_gemma_path)
    kedro = [sys.executable, "-m", "kedro", "run", "--env", "click", "--conf-source", str(conf)]
    run(kedro, folder / "kedro_run.log", timeout=900)
    ask = [sys.executable, "-m", "kaggle_qa.assistant", "--env", "click", "--conf-source", str(conf), "--json",
           QUESTION]
    answers = [json.loads(line) for line in run(ask, folder / "ask.log", timeout=300).splitlines() if line.strip()]
    return {"data": folder / "data", "conf": conf, "answers": answers}


def test_click_run_writes_only_under_its_own_data_root(click_project):
    data = click_project["data"]
    for name in ("01_raw/raw_pages.json", "02_intermediate/doc_chunks.json", "03_primary/qa_v3.json",
                 "06_models/adapter", "08_reporting/eval_report.md", "08_reporting/user_questions_metrics.json"):
        assert (data / name).exists(), name
    # one save version for every versioned output of the run: none of it landed in the project's data/
    version = latest(data / "08_reporting/eval_report.md").parent.name
    assert latest(data / "06_models/adapter").parent.name == version
    project = PROJECT_ROOT / "data"
    leaked = [*project.glob(f"*/*/{version}"), *project.glob(f"click/*/*/{version}")]
    assert not leaked, f"the run wrote {leaked} under the project's data/"


def test_click_rows_prompts_and_report_never_name_kaggle(click_project):
    data = click_project["data"]
    chunks = json.loads(latest(data / "02_intermediate/doc_chunks.json").read_text())
    assert chunks and all(c["url"].startswith(CLICK_URL) for c in chunks)
    for version in ("qa_v1", "qa_v2", "qa_v3"):
        rows = json.loads(latest(data / f"03_primary/{version}.json").read_text())
        assert rows, version
        assert_no_kaggle(version, json.dumps(rows, ensure_ascii=False))
    assert_no_kaggle("datasheet", latest(data / "08_reporting/datasheet.md").read_text())
    # the teacher prompts as the click domain fills them
    params = yaml.safe_load((click_project["conf"] / "click/parameters.yml").read_text())
    domain = Domain.from_params(params)
    for prompt in sorted((PROJECT_ROOT / "conf/base/prompts").glob("*.txt")):
        assert_no_kaggle(prompt.name, Template(prompt.read_text()).safe_substitute(domain.placeholders()))
    # the model's prompts and answers as evaluate saved them, and the report
    for name in ("07_model_output/predictions.jsonl", "07_model_output/user_questions_predictions.jsonl",
                 "07_model_output/raw_answers.json"):
        assert_no_kaggle(name, latest(data / name).read_text())
    report = latest(data / "08_reporting/eval_report.md").read_text()
    assert_no_kaggle("eval_report", report)


def test_click_user_questions_are_answered_by_both_models(click_project):
    data = click_project["data"]
    records = [json.loads(line) for line in latest(data / "07_model_output/user_questions_predictions.jsonl")
               .read_text().splitlines() if line.strip()]
    asked = [q["question"] for q in json.loads((PROJECT_ROOT / "data/01_raw/click_questions.json").read_text())]
    assert 0 < len(records) < USER_QUESTIONS  # the reported part; the rest guided selection
    assert {r["question"] for r in records} <= set(asked[:USER_QUESTIONS])
    metrics = json.loads(latest(data / "08_reporting/user_questions_metrics.json").read_text())
    assert_no_kaggle("user_questions_metrics", json.dumps(metrics))
    table = latest(data / "08_reporting/user_questions_table.md").read_text()
    assert "cited" in table.lower() and "refused" in table.lower()
    assert table.strip() in latest(data / "08_reporting/eval_report.md").read_text()


def test_kaggle_qa_ask_answers_a_click_question_citing_click_pages(click_project):
    (answer,) = click_project["answers"]
    assert answer["question"] == QUESTION
    assert answer["covered"], f"refused: {answer}"
    assert answer["citations"], answer
    assert all(c["url"].startswith(CLICK_URL) for c in answer["citations"]), answer["citations"]
    assert_no_kaggle("the answer", json.dumps(answer, ensure_ascii=False))
