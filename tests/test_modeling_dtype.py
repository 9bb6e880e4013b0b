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
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert resolve_dtype("auto") == expected  # AVX2-only CPUs emulate bf16 ~40x slower: fp32 there
    assert resolve_dtype("float16") == "float16"  # an explicit dtype is never changed


def test_kernels_held_to_avx2_run_the_avx2_path_in_float32():
    """`ATEN_CPU_CAPABILITY=avx2` (PyTorch's own switch) on any CPU, even one with native bf16:
    `auto` resolves to float32, as on an AVX2-only machine (run in a fresh process: the switch
    is read when torch loads)."""
    import os
    import subprocess
    import sys

    code = "import torch; from kaggle_qa.modeling import resolve_dtype; print(torch.backends.cpu.get_cpu_capability(), resolve_dtype('auto'))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["AVX2", "float32"]
