"""Checkpoint I/O: one atomic file per run folder, refused when it belongs to another run."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def run_fingerprint(settings: dict, base_identity: dict, examples: list[list[dict]], world_size: int = 1) -> str:
    """Settings, base model, the training/validation data content and the number of ranks: a
    checkpoint resumes only the same run (computed once per run: it hashes every token id)."""
    data = hashlib.sha256()
    for part in examples:
        for example in part:
            data.update(json.dumps([example["input_ids"], example["labels"]]).encode())
        data.update(b"|")
    keys = {k: v for k, v in settings.items() if k != "checkpoint_dir"}
    parts = [keys, base_identity, data.hexdigest()] + ([world_size] if world_size != 1 else [])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])


class CheckpointStore:
    """`folder/checkpoint.pt`: written to a temporary name and renamed, so a run killed with
    kill -9 always finds a whole checkpoint (or none)."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def save(self, payload: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{CHECKPOINT_FILE}.tmp"
        torch.save({"fingerprint": self.fingerprint, **payload}, tmp)
        tmp.replace(self.path)

    def load(self) -> dict | None:
        """The checkpoint of this run, None when there is none; ValueError when it is another run's."""
        if not self.path.exists():
            return None
        payload = torch.load(self.path, weights_only=False)
        if payload["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{self.path} belongs to a run with other parameters, data, base model or number of processes; "
                "delete that folder to start afresh, or restore the settings to resume it"
            )
        return payload

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
