"""FSDP2 for a base that does not fit one GPU: `torch.distributed.fsdp.fully_shard` on every
decoder layer, so each rank holds 1/N of every layer's weights and gathers one layer at a time.

Unlike torchtune's `shard_model`, the root (embeddings, final norm, LM head: frozen, tied in Gemma)
is not sharded: the loss calls the body and the LM head directly (logits only at answer tokens),
which would bypass a sharded root's gather hooks. They stay replicated on every rank."""

from __future__ import annotations

import torch


def decoder_layers(model) -> torch.nn.ModuleList:
    """The transformer's decoder layers (the largest ModuleList of the model)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no decoder layers (ModuleList) to shard")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def shard_with_fsdp2(model, compute_dtype: str = "float32", reshard_after_forward: bool = True):
    """Shard `model` in place over the default process group; bf16 compute with fp32 gradient
    reduction when `compute_dtype` is bfloat16 (MixedPrecisionPolicy)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if compute_dtype == "bfloat16" else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded (DTensor) parameter or gradient norm; the tensor itself otherwise.
    A collective for a DTensor: every rank calls it."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def load_into(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, sharded or not (a collective for a DTensor)."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        value = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements)
    param.copy_(value)
