"""`resolve_dtype("auto")` on each CPU kind, forced: the path this machine does not take is tested too."""

from __future__ import annotations

import pytest
import torch

from kaggle_qa.modeling import resolve_dtype


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16"), (True, True, "bfloat16")],
)
def test_auto_dtype_follows_native_bf16_support(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_dtype("auto") == expected  # AVX2-only CPUs emulate bf16 ~40x slower: fp32 there
    assert resolve_dtype("float16") == "float16"  # an explicit dtype is never changed
