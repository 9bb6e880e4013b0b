"""Train pipeline: masking check, batching, best-only/early stopping, NaN, resume after kill -9,
the pipeline and the sweep on a tiny random Gemma 3, and two real QLoRA steps on Gemma 3 270M."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset

from kaggle_qa.datasets import FolderDataset
from kaggle_qa.datasets.train import SweepTableDataset
from kaggle_qa.modeling import load_tokenizer, model_identity
from kaggle_qa.pipelines.train.nodes import (
    LossMaskingError,
    build_examples,
    check_loss_masking,
    merge_params,
    train_adapter,
)
from kaggle_qa.pipelines.train.pipeline import create_pipeline, create_sweep_pipeline
from kaggle_qa.modeling import resolve_dtype
from kaggle_qa.pipelines.train.recipe import CHECKPOINT_FILE, length_grouped_batches
from kaggle_qa.prompting import IGNORE_INDEX

PROJECT_ROOT = Path(__file__).resolve().parents[3]

CONTEXT = "Kaggle Notebooks run in the browser. A session stops after 12 hours of execution time."
ROWS = [
    {"input": CONTEXT, "instruction": "True or False: a notebook session can run for 12 hours.",
     "output": "True.", "task_type": "true_false"},
    {"input": CONTEXT, "instruction": "Do Kaggle Notebooks run in the browser?",
     "output": "Yes, they run in the browser.", "task_type": "yes_no"},
    {"input": CONTEXT, "instruction": "How long can a session run?",
     "output": "Up to 12 hours of execution time.", "task_type": "extractive_qa"},
    {"input": CONTEXT, "instruction": "Premise: sessions stop after 12 hours. Hypothesis: sessions never stop. "
     "Does the premise entail the hypothesis?", "output": "No, it contradicts it.", "task_type": "nli"},
] * 3


def tiny_params(tmp_path: Path, **overrides) -> dict:
    """CPU-fast parameters for the tiny model (full-precision LoRA unless quantization is given)."""
    params = {
        "seed": 0, "max_length": 96, "max_train_examples": None, "validation_examples": 4, "validation_seed": 0,
        "compute_dtype": "float32", "quantization": None, "gradient_checkpointing": False,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "bias": "none", "target_modules": "all-linear"},
        "optimizer": "paged_adamw_32bit", "learning_rate": 3e-2, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
        "max_grad_norm": 1.0, "weight_decay": 0.01, "batch_size": 2, "gradient_accumulation_steps": 2,
        "length_group_size": 2, "epochs": 3, "max_steps": None, "eval_every_steps": 1, "eval_batch_size": 4,
        "early_stopping_patience": 100, "early_stopping_min_delta": 0.0, "checkpoint_every_steps": 1,
        "checkpoint_dir": str(tmp_path / "checkpoints"), "head_chunk_tokens": 1024,
    }
    return merge_params(params, overrides)


def lora_b_weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n]


def test_length_grouped_batches_cover_every_example_once_with_little_padding():
    lengths = [((i * 37) % 200) + 10 for i in range(64)]
    batches = length_grouped_batches(lengths, batch_size=4, group_size=8, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(64))
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    random_order = [list(range(64))[i : i + 4] for i in range(0, 64, 4)]
    random_padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in random_order)
    assert padding < random_padding / 3
    assert batches == length_grouped_batches(lengths, batch_size=4, group_size=8, seed=1)


def test_masking_check_accepts_answer_plus_eos_and_rejects_wrong_masks(tiny_gemma_path):
    tokenizer = load_tokenizer(tiny_gemma_path)
    params = {"max_train_examples": None, "validation_examples": None, "seed": 0, "validation_seed": 0,
              "max_length": 96}
    train, _ = build_examples(ROWS, ROWS, tiny_gemma_path, params)
    report = check_loss_masking(tokenizer, ROWS, train)
    assert set(report) == {"true_false", "yes_no", "extractive_qa", "nli"}
    assert report["true_false"]["trained_text"] == "True." + tokenizer.eos_token

    no_eos = [dict(e, labels=e["labels"][:-1] + [IGNORE_INDEX]) for e in train]
    with pytest.raises(LossMaskingError, match="row 0 \\(true_false\\)"):
        check_loss_masking(tokenizer, ROWS, no_eos)
    prompt_trained = [dict(e, labels=[e["input_ids"][0], *e["labels"][1:]]) for e in train]
    with pytest.raises(LossMaskingError, match="prompt tokens"):
        check_loss_masking(tokenizer, ROWS, prompt_trained)
    nothing_trained = [dict(e, labels=[IGNORE_INDEX] * len(e["labels"])) for e in train]
    with pytest.raises(LossMaskingError, match="no token carries loss"):
        check_loss_masking(tokenizer, ROWS, nothing_trained)


def test_label_position_loss_equals_the_full_logits_loss(tiny_gemma_path):
    """Logits only at label positions give exactly the loss of the full head over every position."""
    from kaggle_qa.modeling import load_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    params = {"max_train_examples": None, "validation_examples": None, "seed": 0, "validation_seed": 0,
              "max_length": 96}
    examples, _ = build_examples(ROWS[:4], ROWS[:4], tiny_gemma_path, params)
    model = load_model(tiny_gemma_path, dtype="float32")
    batch = collate(examples, pad_token_id=0)
    with torch.no_grad():
        loss_sum, count = answer_loss_sum(model, batch, head_chunk_tokens=7)  # several chunks
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert count == sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    assert loss_sum.item() / count == pytest.approx(full.loss.item(), rel=1e-5)


def test_empty_training_set_is_a_clear_error(tiny_gemma_path):
    params = {"max_train_examples": None, "validation_examples": None, "seed": 0, "validation_seed": 0,
              "max_length": 96}
    with pytest.raises(ValueError, match="qa_v3"):
        build_examples([], ROWS, tiny_gemma_path, params)


def test_train_pipeline_lowers_validation_loss_and_saves_a_complete_adapter(tiny_gemma_path, tmp_path):
    params = tiny_params(tmp_path)
    catalog = DataCatalog(
        {"qa_v3": MemoryDataset(ROWS), "qa_v2": MemoryDataset(ROWS[:4]), "base_model": MemoryDataset(tiny_gemma_path),
         "params:train": MemoryDataset(params), "adapter": FolderDataset(str(tmp_path / "adapter")),
         "train_metrics": JSONDataset(filepath=str(tmp_path / "train_metrics.json")),
         "learning_curves": MatplotlibDataset(filepath=str(tmp_path / "learning_curves.png"))}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    # random tiny weights start at ln(262144) = 12.48; a real drop, not noise (see the 270M run in README)
    assert metrics["best_val_loss"] < metrics["base_val_loss"] - 0.1, metrics["history"]
    assert metrics["steps"] == 9 and metrics["tokens_per_s"] > 0 and metrics["optimizer"] == "AdamW"
    assert [h["step"] for h in metrics["history"]] == list(range(10))
    assert (tmp_path / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    folder = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "training_params.json", "base_model.json"} <= {
        p.name for p in folder.iterdir()}
    assert json.loads((folder / "base_model.json").read_text()) == model_identity(tiny_gemma_path)
    assert json.loads((folder / "training_params.json").read_text())["learning_rate"] == params["learning_rate"]
    assert not Path(params["checkpoint_dir"]).exists(), "checkpoints are removed after success"


def test_best_only_adapter_and_early_stopping(tiny_gemma_path, tmp_path):
    train, validation = build_examples(ROWS, ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    # Training lowers the loss a little, but never by min_delta: no evaluation counts as an improvement,
    # so patience 2 with an eval every step stops after 2 steps and the step-0 weights are what is kept.
    params = tiny_params(tmp_path, early_stopping_patience=2, early_stopping_min_delta=1.0)
    adapter, metrics = train_adapter(train, validation, tiny_gemma_path, params)
    assert metrics["stopped_early"] and metrics["steps"] == 2
    assert metrics["best_step"] == 0 and metrics["best_val_loss"] == metrics["base_val_loss"]
    assert metrics["history"][-1]["val_loss"] != metrics["base_val_loss"], "the last weights differ from the kept ones"
    assert all(torch.count_nonzero(b) == 0 for b in lora_b_weights(adapter.model)), "best = untouched LoRA"


def test_nan_loss_stops_with_a_clear_message(tiny_gemma_path, tmp_path):
    train, validation = build_examples(ROWS, ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, learning_rate=1e20, warmup_ratio=0.0, eval_every_steps=100)
    with pytest.raises(FloatingPointError, match="training loss is (nan|inf).*lower learning_rate"):
        train_adapter(train, validation, tiny_gemma_path, params)


RESUME_SCRIPT = """
import json, sys
from kaggle_qa.pipelines.train.nodes import train_adapter
data = json.load(open(sys.argv[1]))
train_adapter(data["train"], data["validation"], data["base_model"], data["params"])
"""


def test_resume_after_kill_9_reaches_the_same_weights(tiny_gemma_path, tmp_path):
    train, validation = build_examples(ROWS, ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, epochs=4, eval_every_steps=2, lora={"dropout": 0.1})
    reference, reference_metrics = train_adapter(
        train, validation, tiny_gemma_path, dict(params, checkpoint_dir=str(tmp_path / "uninterrupted"))
    )

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"train": train, "validation": validation, "base_model": tiny_gemma_path,
                               "params": params}))
    checkpoint = Path(params["checkpoint_dir"]) / CHECKPOINT_FILE
    child = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(job)], cwd=PROJECT_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if checkpoint.exists():
            step = torch.load(checkpoint, weights_only=False)["state"]["step"]
            if step >= 3:
                os.kill(child.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    child.wait()
    assert killed_at is not None and killed_at < reference_metrics["steps"], "the child was not killed mid-run"

    resumed, resumed_metrics = train_adapter(train, validation, tiny_gemma_path, params)
    assert resumed_metrics["steps"] == reference_metrics["steps"]
    assert resumed_metrics["best_val_loss"] == pytest.approx(reference_metrics["best_val_loss"], rel=1e-4)
    for got, want in zip(lora_b_weights(resumed.model), lora_b_weights(reference.model)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not checkpoint.parent.exists()


def test_checkpoint_from_other_settings_is_refused(tiny_gemma_path, tmp_path):
    train, validation = build_examples(ROWS, ROWS[:4], tiny_gemma_path, tiny_params(tmp_path))
    params = tiny_params(tmp_path, max_steps=1)
    checkpoint_dir = Path(params["checkpoint_dir"])
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    recipe = LoRAFinetuneRecipe(tiny_gemma_path, params, train, validation)
    recipe.setup()
    recipe.save_checkpoint()
    with pytest.raises(ValueError, match="other parameters"):
        train_adapter(train, validation, tiny_gemma_path, dict(params, learning_rate=1e-3))
    assert (checkpoint_dir / CHECKPOINT_FILE).exists()


def test_sweep_runs_namespaced_experiments_into_a_table(tiny_gemma_path, tmp_path):
    experiments = ("exp_2", "exp_8")
    sweep = {"common": {"max_train_examples": 4, "validation_examples": 2, "epochs": 1, "max_steps": 1},
             "experiments": {"exp_2": {"lora": {"r": 8, "alpha": 16}, "batch_size": 2},
                             "exp_8": {"lora": {"r": 4, "alpha": 8, "dropout": 0.15}, "batch_size": 4}}}
    pipe = create_sweep_pipeline(experiments)
    assert {n.namespace for n in pipe.nodes} >= {"sweep.exp_2", "sweep.exp_8"}
    datasets = {"qa_v3": MemoryDataset(ROWS), "qa_v2": MemoryDataset(ROWS), "base_model": MemoryDataset(tiny_gemma_path),
                "params:train": MemoryDataset(tiny_params(tmp_path)), "params:sweep": MemoryDataset(sweep),
                "sweep_table": SweepTableDataset(str(tmp_path / "sweep_table"))}
    for name in experiments:
        datasets[f"params:sweep.experiments.{name}"] = MemoryDataset(sweep["experiments"][name])
    SequentialRunner().run(pipe, DataCatalog(datasets))
    table = SweepTableDataset(str(tmp_path / "sweep_table")).load()
    assert list(table["experiment"]) == ["exp_2", "exp_8"]
    assert list(table["lora_rank"]) == [8, 4] and list(table["lora_dropout"]) == [0.0, 0.15]
    assert (table["test_loss"] <= table["base_test_loss"]).all()
    markdown = (tmp_path / "sweep_table.md").read_text()
    assert markdown.startswith("| experiment | lora_rank |") and "| exp_8 | 4 |" in markdown


def test_two_real_qlora_steps_on_gemma3_270m_and_reload(embedded_gemma_path, tmp_path):
    """Real weights, real NF4 4-bit QLoRA on CPU, then the saved adapter reloads onto a fresh 4-bit base."""
    from peft import PeftModel

    from kaggle_qa.modeling import load_model
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum, collate

    rows = ROWS[:2]
    params = tiny_params(
        tmp_path, compute_dtype="auto", max_length=64, validation_examples=1, batch_size=1, gradient_accumulation_steps=1, epochs=1,
        gradient_checkpointing=True, learning_rate=2e-4, eval_every_steps=2,
        quantization={"load_in_4bit": True, "quant_type": "nf4", "double_quant": True},
    )
    train, validation = build_examples(rows, rows[:1], embedded_gemma_path, params)
    adapter, metrics = train_adapter(train, validation, embedded_gemma_path, params)
    assert metrics["steps"] == 2 and metrics["compute_dtype"] == resolve_dtype("auto")
    assert any(torch.count_nonzero(b) > 0 for b in lora_b_weights(adapter.model)), "LoRA weights were updated"
    assert "Linear4bit" in {type(m).__name__ for m in adapter.model.modules()}
    FolderDataset(str(tmp_path / "adapter")).save(adapter)

    dtype = metrics["compute_dtype"]
    base = load_model(embedded_gemma_path, dtype=dtype, quantization={**params["quantization"], "compute_dtype": dtype})
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    batch = collate(validation, pad_token_id=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        loss_sum, count = answer_loss_sum(reloaded.get_base_model(), batch, 1024)
    assert loss_sum.item() / count == pytest.approx(metrics["best_val_loss"], rel=2e-2)
