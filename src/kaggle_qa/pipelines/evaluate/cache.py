"""What identifies a base model's results on a test set, so they can be reused across adapters.

The base model's answers, losses and choices depend only on the base weights, the test
rows and the inference settings; not on the adapter. :func:`base_results_key` hashes
exactly those, and the evaluate pipeline reuses a saved ``base_answers`` version whose key
matches (``base_answers_cache`` reads every saved version). The three-context-mode evaluation
keys each mode's base results the same way (``context_modes_base_answers``, read back through
``context_modes_base_answers_cache``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Bump when inference changes what it computes for the same inputs (invalidates cached base results).
INFERENCE_VERSION = 2
KEY_SETTINGS = (
    "max_length", "max_new_tokens", "dtype", "device_type", "attn_implementation",
    "choices", "whole_sequence_loss", "prompt_template_version",
)


def weights_fingerprint(name_or_path: str, head_bytes: int = 1 << 20) -> str:
    """Hash of each weight file's name, size and first MiB: tells two checkpoints with one config apart
    (e.g. gemma-3-270m and its -it variant) without reading a gigabyte. A Hub id hashes to its name."""
    folder = Path(name_or_path)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size}:".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(head_bytes))
    if not files:
        digest.update(str(name_or_path).encode())
    return digest.hexdigest()[:16]


def test_set_hash(rows: list[dict]) -> str:
    """Content hash of the rows as evaluated (id, task type, context, question, reference)."""
    fields = [[row["id"], row["task_type"], row["input"], row["instruction"], row["output"]] for row in rows]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def base_results_key(identity: dict, weights: str, rows: list[dict], settings: dict,
                     extra: dict | None = None) -> tuple[str, dict]:
    """(key, the fields it hashes): base-model identity + weights, test-set content, inference settings,
    and `extra` (further settings of the caller, e.g. the context mode) when given."""
    fields = {
        "base_model": {key: identity[key] for key in ("name", "architecture", "config_sha256")},
        "weights": weights,
        "test_set": test_set_hash(rows),
        "rows": len(rows),
        "settings": {key: settings[key] for key in KEY_SETTINGS},
        "inference_version": INFERENCE_VERSION,
    }
    if extra:
        fields["extra"] = extra
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16], fields
