"""QA row validation and task typing, including the paper's published datasets."""

import json

import pytest
from kedro.io import DatasetError

from kaggle_qa.datasets import QAJSONDataset
from kaggle_qa.qa_schema import QARowError, count_task_types, first_word, infer_task_type, validate_rows


@pytest.mark.parametrize(
    "text, expected",
    [("True.", "true"), ("true,", "true"), ("Yes!", "yes"), ("  NO - never", "no"), ("", ""), ("42", "")],
)
def test_first_word_normalises(text, expected):
    assert first_word(text) == expected


def test_validate_rows_names_source_and_row():
    good = {"input": "", "instruction": "Q?", "output": "A."}
    with pytest.raises(QARowError, match=r"f\.json: row 1 is missing key 'output'"):
        validate_rows([good, {"input": "", "instruction": "Q?"}], "f.json")
    with pytest.raises(QARowError, match=r"row 0 key 'input' holds int"):
        validate_rows([{**good, "input": 3}], "f.json")
    with pytest.raises(QARowError, match="expected a JSON list"):
        validate_rows({"rows": []}, "f.json")


def test_infer_task_type():
    row = {"input": "", "instruction": "", "output": ""}
    assert infer_task_type({**row, "output": "False. It is not."}) == "true_false"
    assert infer_task_type({**row, "instruction": "Is it free?", "output": "Yes, it is."}) == "yes_no"
    assert infer_task_type({**row, "instruction": "Does the premise entail it?", "output": "It does."}) == "nli"
    assert infer_task_type({**row, "instruction": "Where?", "output": "On the page."}) == "extractive_qa"
    assert infer_task_type({**row, "output": "True", "task_type": "nli"}) == "nli"


def test_qa_json_dataset_round_trip_and_row_errors(tmp_path):
    path = tmp_path / "qa.json"
    rows = [{"input": "c", "instruction": "q", "output": "a", "task_type": "extractive_qa"}]
    QAJSONDataset(str(path)).save(rows)
    assert QAJSONDataset(str(path)).load() == rows
    path.write_text(json.dumps(rows + [{"input": "c", "instruction": None, "output": "a"}]))
    # Kedro wraps load errors in DatasetError; the message still names the file and the row
    with pytest.raises(DatasetError, match=rf"{path}: row 1 key 'instruction' holds NoneType"):
        QAJSONDataset(str(path)).load()
    path.write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        QAJSONDataset(str(path)).load()


def test_published_v3_task_mix_matches_paper_table_1(project_root):
    rows = QAJSONDataset(str(project_root / "data" / "03_primary" / "published" / "kaggle_docs_QA_v3.json")).load()
    counts = count_task_types(rows)
    assert len(rows) == 1663
    assert abs(counts["true_false"] - 598) <= 10  # Table 1: 598 True-False
    assert abs(counts["yes_no"] - 124) <= 20  # Table 1: 124 Yes-No
