"""How a model computes at inference: float32 weights, matmuls in the compute dtype, linears prepacked.

One definition for evaluate (:class:`kaggle_qa.pipelines.evaluate.inference.Evaluator`) and the
assistant (:class:`kaggle_qa.assistant.Assistant`), so the product answers with the numerics its
reported numbers were measured with, which are the numerics training computed in:

- **compute dtype** ``bfloat16`` (``auto`` on a CPU with native bf16, :func:`kaggle_qa.modeling.resolve_dtype`):
  float32 weights, residual stream and norms, bf16 inside the matmuls (``torch.autocast``), as the
  train pipeline computes; ``float32`` where bf16 is emulated (AVX2) or asked for.
- **prepacked linears** (:func:`packed_linears`): on CPU every float32 ``nn.Linear`` runs through
  oneDNN with its weight prepacked once in the compute dtype. MKL's plain sgemm is 1.4-4x slower at
  the few-row shapes of decoding (the 262k-row LM head at 13 rows: ~300 ms against ~80 ms packed, on
  one AVX-512 Xeon core); in bf16 the packed layers give bit for bit what autocast's ``F.linear``
  gives, at about half the float32 time (benchmarks/bench_eval_compute_dtype.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from kaggle_qa.modeling import torch_dtype

logger = logging.getLogger(__name__)


def _packed_linear_forward(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The prepacked layer on `x`, cast to the packed weight's dtype first (what autocast does to a linear's input)."""
    return torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype), packed, bias, "none", [], "")


def _packed(module: torch.nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The module's weight in `dtype` prepacked for oneDNN, and its bias in `dtype`."""
    packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(dtype))
    return packed, module.bias.detach().to(dtype) if module.bias is not None else None


def _reference_linear(module: torch.nn.Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What the plain layer computes in `dtype`: ``F.linear`` itself, under autocast for bf16."""
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        return F.linear(x, module.weight, module.bias)


def _packing_works(module: torch.nn.Linear, dtype: torch.dtype) -> bool:
    """Whether this torch build's (private) oneDNN linear ops run in `dtype` and agree with the plain
    layer (:func:`_reference_linear`) on this CPU; if not, the plain layers are kept (logged)."""
    try:
        with torch.no_grad():
            x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(0))
            found = _packed_linear_forward(*_packed(module, dtype), x).float()
            ok = torch.allclose(found, _reference_linear(module, x, dtype).float(), atol=1e-4, rtol=1e-4)
    except (RuntimeError, NotImplementedError, AttributeError) as error:
        logger.warning("oneDNN prepacked %s linear layers unavailable here (%s); using plain ones", dtype, error)
        return False
    if not ok:
        logger.warning("oneDNN prepacked %s linear layers disagree with F.linear here; using plain ones", dtype)
    return ok


@contextlib.contextmanager
def packed_linears(model, compute_dtype: torch.dtype = torch.float32) -> Iterator[int]:
    """Within the block, every plain float32 CPU ``nn.Linear`` of `model` runs through oneDNN
    with its weight prepacked once, in `compute_dtype` (inference only); yields how many were packed.

    In bfloat16 a packed layer casts its input to bf16 and returns bf16, exactly what a linear
    computes under ``torch.autocast(bfloat16)`` (the caller runs the rest of the model under
    autocast: :func:`computing`). Nothing is changed for other weight dtypes or devices, or where
    this torch build lacks the oneDNN ops. The packed copies (the linear weights' size in
    `compute_dtype`, LM head included) live only within the block; the modules' own forwards are
    restored on exit.
    """
    linears = [
        module for module in model.modules()
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
        and module.weight.device.type == "cpu"
    ]
    usable = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    patched: list[tuple[torch.nn.Module, object]] = []
    try:
        if usable and linears and _packing_works(linears[0], compute_dtype):
            with torch.no_grad():
                for module in linears:
                    packed, bias = _packed(module, compute_dtype)
                    patched.append((module, module.__dict__.get("forward")))
                    module.forward = lambda x, packed=packed, bias=bias: _packed_linear_forward(packed, bias, x)
        yield len(patched)
    finally:
        for module, previous in patched:
            del module.forward
            if previous is not None:
                module.forward = previous


def uses_autocast(model, compute_dtype: str | torch.dtype) -> bool:
    """Whether `model` computes in `compute_dtype` by autocast (float32 weights, a lower compute dtype);
    raises when its weights are neither float32 nor in the compute dtype."""
    compute = torch_dtype(compute_dtype)
    weights = {param.dtype for param in model.parameters() if param.is_floating_point()}
    autocast = compute != torch.float32 and weights == {torch.float32}
    if compute != torch.float32 and not autocast and weights != {compute}:
        raise ValueError(f"compute dtype {compute} with weights in {sorted(map(str, weights))}: "
                         "expected float32 weights (autocast) or weights in the compute dtype")
    return autocast


def computing(model, compute_dtype: str | torch.dtype):
    """The context every forward of `model` runs in: autocast to the compute dtype over float32 weights
    (:func:`uses_autocast`), or nothing."""
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch_dtype(compute_dtype), enabled=uses_autocast(model, compute_dtype))


def packing_dtype(model, compute_dtype: str | torch.dtype) -> torch.dtype:
    """The dtype :func:`packed_linears` packs `model`'s float32 linears in: the compute dtype under autocast,
    else float32."""
    return torch_dtype(compute_dtype) if uses_autocast(model, compute_dtype) else torch.float32
