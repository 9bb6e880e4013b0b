"""The recipe's typed configuration. Its defaults ARE conf/base/parameters_train.yml's values
(tests/pipelines/train/test_config.py loads the yml and compares), so a key left out of an
override file means what the conf says, never a second default hidden in code."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class SplitConfig:
    validation_share: float = 0.1
    validation_max_rows: int | None = 96
    test_share: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class LoraConfig:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    bias: str = "none"
    target_modules: Any = "all-linear"


@dataclass(frozen=True)
class SelectionConfig:
    use_label_accuracy: bool = True
    balanced: bool = True
    loss_weight: float = 0.25
    noise_z: float = 2.0


@dataclass(frozen=True)
class RetrievedContextConfig:
    share: float = 0.75                  # share of the open-question rows given the assistant's retrieved context
    repeats: int = 3                     # each open question trained this many times (training side only)
    tasks: Any = field(default_factory=lambda: ["extractive_qa"])  # task types that get it (train/contexts.py)
    seed: int = 0


@dataclass(frozen=True)
class OthersConfig:
    share: float = 0.15                  # share of qa_cross_teacher's chunks (by a hash) set aside to choose the strength on
    max_rows: int = 64                   # seeded sample of that part's rows (0: none)
    seed: int = 0


@dataclass(frozen=True)
class StrengthConfig:
    grid: Any = field(default_factory=lambda: [0.25, 0.375, 0.5, 0.75, 1.0])  # candidate strengths s (1 = as trained)
    fallback: float = 0.5                # s when no answer written by someone else is there to choose on
    others: OthersConfig = field(default_factory=OthersConfig)


@dataclass(frozen=True)
class DistributedConfig:
    num_processes: int = 1               # 1: train in the Kedro process; >1: torchrun child ranks
    backend: str = "auto"                # auto: nccl on CUDA, gloo on CPU
    strategy: str = "ddp"                # ddp: replicated model, gradients all-reduced | fsdp: fully_shard (FSDP2)
    timeout_s: int = 1800                # collective timeout (rank 0 validates while the others wait)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 42
    max_length: int = 512
    max_train_examples: int | None = None
    require_context: bool = True
    split: SplitConfig = field(default_factory=SplitConfig)
    compute_dtype: str = "auto"
    quantization: dict | None = None
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    label_token_weight: float = 4.0
    optimizer: str = "paged_adamw_32bit"
    learning_rate: float = 2.0e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    max_grad_norm: float = 0.3
    weight_decay: float = 0.01
    batch_size: int = 4
    gradient_accumulation_steps: int = 2
    length_group_size: int = 8
    pad_to_multiple_of: int = 32
    batch_grouping: str = "length"
    epochs: int = 3
    max_steps: int | None = None
    time_budget_s: float | None = 840
    budget_calibration_steps: int = 3
    budget_hard_stop: float = 1.15
    budget_replan_tolerance: float = 0.03
    eval_every_steps: int | None = None
    evaluations_per_run: int = 8
    max_validation_share: float = 0.2
    eval_batch_size: int = 8
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    train_fit_examples: int = 96
    early_stopping_patience: int = 4
    early_stopping_min_delta: float = 0.0
    checkpoint_every_steps: int = 5
    checkpoint_dir: str = "data/06_models/train_checkpoints"
    head_chunk_tokens: int = 1024
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    retrieved_context: RetrievedContextConfig = field(default_factory=RetrievedContextConfig)
    strength: StrengthConfig = field(default_factory=StrengthConfig)

    @classmethod
    def from_dict(cls, params: dict) -> "TrainConfig":
        """Build from `params:train` (nested dicts); an unknown key is an error naming it."""
        return _build(cls, params, "train")

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.batch_grouping not in ("length", "chunk"):
            raise ValueError(f"train.batch_grouping must be 'length' or 'chunk', not {self.batch_grouping!r}")
        if self.distributed.num_processes < 1:
            raise ValueError(f"train.distributed.num_processes must be >= 1, not {self.distributed.num_processes}")
        if self.distributed.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"train.distributed.strategy must be 'ddp' or 'fsdp', not {self.distributed.strategy!r}")
        grid = list(self.strength.grid or [])
        if not grid or any(not 0 < float(s) <= 1 for s in grid) or not 0 < self.strength.fallback <= 1:
            raise ValueError(f"train.strength.grid {grid} and fallback {self.strength.fallback} must be in (0, 1]")


def _build(cls, values: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values or {}) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(where + '.' + k for k in unknown)}")
    kwargs = {}
    for name, value in (values or {}).items():
        nested = _nested_type(cls, name)
        kwargs[name] = _build(nested, value, f"{where}.{name}") if nested and isinstance(value, dict) else value
    return cls(**kwargs)


def _nested_type(cls, name: str):
    default = next(f for f in fields(cls) if f.name == name).default_factory
    return default if default is not dataclasses.MISSING and dataclasses.is_dataclass(default) else None
