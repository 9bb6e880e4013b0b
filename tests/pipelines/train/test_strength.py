"""Adapter strength (train/strength.py): the scaling is really applied, the saved adapter is the model that
was measured, the lowest loss wins, and evaluate never scores the chunks the strength was chosen on."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from kaggle_qa.modeling import load_finetuned_model, load_model, model_identity
from kaggle_qa.pipelines.evaluate.nodes import prepare_test_set
from kaggle_qa.pipelines.train.strength import StrengthSetter, choose_strength, others_part, others_selection_examples
from kaggle_qa.qa_schema import group_key

IDS = torch.tensor([[2, 818, 5279, 563, 496, 1698, 236761, 108, 9243, 236787]])


def _peft(path: str, alpha: int = 8):
    torch.manual_seed(0)
    model = get_peft_model(load_model(path, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=alpha, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():  # a LoRA that changes the function (B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model.eval()


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    return model(input_ids=IDS).logits.float()


def test_strength_zero_is_the_base_and_the_saved_adapter_is_the_model_measured(tiny_gemma_path, tmp_path):
    model = _peft(tiny_gemma_path)
    full = _logits(model)
    with model.disable_adapter():
        base = _logits(model)
    assert not torch.allclose(full, base, atol=1e-3)
    setter = StrengthSetter(model)
    setter.set(0.0)
    torch.testing.assert_close(_logits(model), base, atol=1e-5, rtol=1e-5)
    setter.set(0.5)
    half = _logits(model)
    assert not torch.allclose(half, full, atol=1e-3) and not torch.allclose(half, base, atol=1e-3)
    setter.record()
    assert model.peft_config["default"].lora_alpha == 4
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 4
    reloaded = PeftModel.from_pretrained(load_model(tiny_gemma_path, dtype="float32"), str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(_logits(reloaded), half, atol=1e-4, rtol=1e-4)
    # recording again keeps the strength it has: the setter's 1.0 is now the recorded one
    setter.set(1.0)
    torch.testing.assert_close(_logits(model), half, atol=1e-5, rtol=1e-5)


def test_the_lowest_loss_on_others_answers_is_chosen_and_the_fallback_without_them(tiny_gemma_path):
    model = _peft(tiny_gemma_path)
    setter = StrengthSetter(model)
    losses = {0.0: 3.0, 0.25: 2.0, 0.5: 1.5, 1.0: 2.5}

    def measure(examples):
        return {"loss": losses[setter.strength]}

    result = choose_strength(measure, setter, [{"group": "a"}, {"group": "b"}], [1.0, 0.25, 0.5], fallback=1.0)
    assert result["chosen"] == 0.5 and setter.strength == 0.5
    assert [row["strength"] for row in result["table"]] == [0.0, 0.25, 0.5, 1.0]
    assert result["base_loss"] == 3.0 and result["full_strength_loss"] == 2.5 and result["groups"] == 2
    losses[0.5] = 3.5  # now 0.25 is best
    assert choose_strength(measure, setter, [{}], [0.25, 0.5, 1.0], 1.0)["chosen"] == 0.25
    result = choose_strength(measure, setter, [], [0.25, 0.5, 1.0], fallback=0.5)
    assert result["chosen"] == 0.5 and setter.strength == 0.5 and result["chosen_by"].startswith("fallback")


def _cross_rows(n: int) -> list[dict]:
    return [{"input": f"Context number {i}: sessions run for {i} hours.", "instruction": f"How long, case {i}?",
             "output": f"They run for {i} hours.", "chunk_id": f"other-{i}"} for i in range(n)]


def test_others_part_is_chunk_disjoint_and_evaluate_leaves_its_chunks_out(tiny_gemma_path, tmp_path):
    rows = _cross_rows(60)
    part = others_part(rows, 0.25)
    assert 5 < len(part) < 30 and others_part(rows, 0.25) == part  # a fixed hash, not a draw
    params = {"max_length": 96, "strength": {"others": {"share": 0.25, "max_rows": 4, "seed": 0}}}
    examples = others_selection_examples(rows, tiny_gemma_path, params)
    assert len(examples) == 4 and all(e["set"] == "others_selection" for e in examples)
    groups = {e["group"] for e in examples}
    assert groups <= {group_key(row) for row in part}
    assert others_selection_examples(rows, tiny_gemma_path, {**params, "strength": {"others": {"share": 0.25, "max_rows": 0}}}) == []
    # the adapter records those chunks; evaluate samples its test rows from the others
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "data_split.json").write_text(json.dumps({"others_selection_groups": sorted(groups)}))
    test = prepare_test_set(rows, {"limit": 56, "seed": 0, "test_set_name": "qa_cross_teacher"}, str(adapter))
    assert len(test) == 56 and not {row["chunk"] for row in test} & groups
    without = prepare_test_set(rows, {"limit": 60, "seed": 0}, None)
    assert len(without) == 60


@pytest.mark.parametrize("strength", [0.25, 1.0])
def test_the_merged_fine_tuned_model_has_the_recorded_strength(tiny_gemma_path, tmp_path, strength):
    model = _peft(tiny_gemma_path)
    setter = StrengthSetter(model)
    setter.set(strength)
    expected = _logits(model)
    setter.record()
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    (folder / "training_params.json").write_text(json.dumps({"quantization": None}))
    (folder / "base_model.json").write_text(json.dumps(model_identity(tiny_gemma_path)))
    merged = load_finetuned_model(tiny_gemma_path, folder, dtype="float32")
    torch.testing.assert_close(_logits(merged), expected, atol=1e-4, rtol=1e-4)
