"""FastDropout: torch's inverted dropout with a cheaper mask, the same statistics, plain autograd."""

from __future__ import annotations

import math

import pytest
import torch

from kaggle_qa.modeling import load_model
from kaggle_qa.pipelines.train.dropout import FastDropout, speed_up_lora_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drop_rate_and_scale_are_those_of_torch_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(400_003)  # not a multiple of 4: the last 64-bit draw is cut
    y = FastDropout(p).train()(x)
    dropped = float((y == 0).float().mean())
    sd = math.sqrt(p * (1 - p) / x.numel())
    assert abs(dropped - p) < 5 * sd
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert abs(float(y.mean()) - 1.0) < 5 * sd / (1 - p)  # expectation kept


def test_masks_differ_between_calls_and_follow_the_seed():
    x = torch.ones(4, 64, 128)
    layer = FastDropout(0.1).train()
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    # every 16-bit slot of a 64-bit draw is used: no position is kept by construction
    drops = torch.stack([(layer(x) == 0).reshape(-1, 4).float().mean(0) for _ in range(20)]).mean(0)
    assert bool((drops > 0.07).all())


def test_eval_mode_and_zero_probability_are_the_identity_and_gradients_are_the_mask():
    x = torch.randn(3, 7, 5, requires_grad=True)
    layer = FastDropout(0.2)
    assert layer.eval()(x) is x and FastDropout(0.0).train()(x) is x
    y = layer.train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.8)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        FastDropout(1.0)


def test_lora_dropouts_of_a_peft_model_are_replaced_on_cpu(tiny_gemma_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(tiny_gemma_path, dtype="float32"),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules="all-linear"))
    lora = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
    assert speed_up_lora_dropout(model) == len(lora) > 0
    assert all(type(m.lora_dropout["default"]) is FastDropout and m.lora_dropout["default"].p == 0.05 for m in lora)
    model.train()
    ids = torch.tensor([[2, 10, 20, 30]])
    model(input_ids=ids, labels=ids).loss.backward()  # trains through the new masks
    assert all(m.lora_A["default"].weight.grad is not None for m in lora)
    assert speed_up_lora_dropout(model) == 0  # nothing left to replace
