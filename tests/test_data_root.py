"""One environment folder retargets where its data goes: every generated dataset of conf/base's catalog
lives under ${globals:data_root} (conf/base/globals.yml: data), and `--env click` moves them all under
data/click (conf/click/globals.yml), so no two sites share a generated path (the "latest" version of a
dataset is always the environment's own). Vendored inputs keep their fixed paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from kaggle_qa.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF = PROJECT_ROOT / "conf"
ENVS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"base", "local"})
# inputs committed to the repository (.gitignore's exceptions), read-only for every environment
VENDORED = ("data/01_raw/kaggle_docs_site", "data/01_raw/kaggle_docs_2024-03", "data/01_raw/click_docs_site",
            "data/01_raw/off_topic_questions.json", "data/01_raw/click_questions.json",
            "data/01_raw/click_off_topic_questions.json", "data/03_primary/published/")


def loader(env: str) -> OmegaConfigLoader:
    return OmegaConfigLoader(str(CONF), **(CONFIG_LOADER_ARGS | {"default_run_env": env}))


def data_paths(catalog: dict) -> dict[str, str]:
    """name -> the file or folder of every catalog entry that has one under data/."""
    paths = {name: entry.get("filepath") or entry.get("path") for name, entry in catalog.items()}
    return {name: str(path) for name, path in paths.items() if path and str(path).startswith("data/")}


def generated(catalog: dict) -> dict[str, str]:
    return {name: path for name, path in data_paths(catalog).items() if not path.startswith(VENDORED)}


def test_every_generated_dataset_of_base_uses_the_data_root():
    for file in sorted((CONF / "base").glob("catalog*.yml")):
        for name, entry in (yaml.safe_load(file.read_text()) or {}).items():
            path = entry.get("filepath") or entry.get("path")
            if path and not str(path).startswith(("conf/", *VENDORED)):
                assert str(path).startswith("${globals:data_root}/"), f"{file.name}: {name} writes to {path}"
    assert loader("local")["globals"]["data_root"] == "data"


def test_click_writes_every_generated_dataset_under_data_click():
    click = loader("click")
    assert click["globals"]["data_root"] == "data/click"
    paths = generated(click["catalog"])
    assert {"raw_pages", "doc_chunks", "qa_v3", "base_model", "adapter", "eval_report", "retrieval_index",
            "user_questions_metrics"} <= set(paths)
    outside = {name: path for name, path in paths.items() if not path.startswith("data/click/")}
    assert not outside, f"--env click writes outside data/click: {outside}"
    assert click["parameters"]["train"]["checkpoint_dir"].startswith("data/click/")
    # its inputs are Click's vendored files, not Kaggle's
    inputs = data_paths(click["catalog"])
    assert inputs["user_questions"] == "data/01_raw/click_questions.json"
    assert inputs["off_topic_questions"] == "data/01_raw/click_off_topic_questions.json"


@pytest.mark.parametrize("env", [env for env in ENVS if env != "click"])
def test_no_other_environment_shares_a_generated_path_with_click(env):
    click = set(generated(loader("click")["catalog"]).values())
    other = loader(env)["catalog"]  # every environment's catalog still resolves
    shared = click & set(generated(other).values())
    assert not shared, f"--env {env} and --env click both write {sorted(shared)}"
    assert generated(other), env
