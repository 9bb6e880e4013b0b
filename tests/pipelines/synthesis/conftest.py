"""Hand-written doc chunks (the doc_chunks contract) and synthesis parameters for the tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]

CHUNKS = [
    (
        "competitions",
        ["Competitions", "Types of Competitions", "Getting Started"],
        "Getting Started competitions are the easiest, most approachable competitions on Kaggle. "
        "They have two-month rolling leaderboards. Once a submission is more than two months old, it is "
        "automatically invalidated. You can join a competition by clicking the Join Competition button.",
    ),
    (
        "competitions",
        ["Competitions", "Teams", "Merging Teams"],
        "You may invite another team to your team. Most competitions have a team merger deadline after "
        "which no mergers may occur. To merge teams, the Team Leader must accept the merge request. "
        "Teams cannot merge if their combined submissions exceed the daily limit.",
    ),
    (
        "competitions",
        ["Competitions", "Leaderboards", "Public and Private Leaderboards"],
        "The public leaderboard is computed on a portion of the test data. The private leaderboard is "
        "computed on the remainder of the test data and decides the final standings. You should select "
        "two submissions to be scored before the competition closes.",
    ),
    (
        "notebooks",
        ["Notebooks", "Accelerators", "GPUs"],
        "Kaggle provides free access to NVIDIA GPUs in Notebooks. You can enable a GPU by choosing it in the "
        "Accelerator menu of the Notebook editor. GPU sessions have a limit of 30 hours per week. "
        "If you run out of quota, your session will be stopped.",
    ),
    (
        "notebooks",
        ["Notebooks", "Accelerators", "TPUs"],
        "TPUs are hardware accelerators specialized in deep learning tasks. Each TPU core has dedicated "
        "matrix multiplication hardware. TPU sessions are limited to 20 hours per week. "
        "The TPU performance monitor shows how busy the accelerator is.",
    ),
    (
        "notebooks",
        ["Notebooks", "Versions", "Saving a Version"],
        "Every Notebook version is associated with a specific Docker image version. To save a version, "
        "click the Save Version button in the upper right corner. Notebooks are private by default, and "
        "you can make them public from the Sharing menu.",
    ),
    (
        "datasets",
        ["Datasets", "Creating a Dataset", "Supported File Types"],
        "CSV files are the most common file format on Kaggle and are the best choice for tabular data. "
        "The data explorer shows a preview of every CSV file. Datasets may be private or public. "
        "A dataset can hold up to 200 GB of data.",
    ),
    (
        "datasets",
        ["Datasets", "Collaboration", "Who can edit a dataset?"],
        "Owners can invite collaborators to a dataset. Collaborators with edit rights can create new "
        "versions of the dataset. Viewers can see a private dataset but cannot change it. "
        "The dataset owner will receive a notification when a collaborator publishes a version.",
    ),
]


def make_chunks() -> list[dict]:
    return [
        {
            "chunk_id": f"chunk{i:02d}",
            "url": f"https://www.kaggle.com/docs/{page}",
            "title": page.capitalize(),
            "heading_path": headings,
            "text": text,
            "n_words": len(text.split()),
        }
        for i, (page, headings, text) in enumerate(CHUNKS)
    ]


@pytest.fixture
def chunks() -> list[dict]:
    return make_chunks()


@pytest.fixture(scope="session")
def base_params() -> dict:
    """conf/base/parameters_synthesis.yml as `kedro run` reads it."""
    return yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_synthesis.yml").read_text())["synthesis"]


@pytest.fixture
def params(base_params, tmp_path) -> dict:
    """The project's parameters, with the teacher cache in a temporary folder."""
    params = copy.deepcopy(base_params)
    params["openai"]["cache_dir"] = str(tmp_path / "teacher_cache")
    return params
