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
import importlib.metadata
import json
from pathlib import Path

# What the base results depend on besides weights and rows: every inference setting, the
# tokenizer, the libraries that compute them, and the code that runs them.
KEY_SETTINGS = (
    "max_length", "max_new_tokens", "dtype", "compute_dtype", "device_type", "attn_implementation", "batch_size", "num_threads",
    "choices", "whole_sequence_loss", "prompt_template_version", "tokenizer_files",
)
LIBRARIES = ("torch", "transformers", "peft")
# The modules whose source decides what inference computes for the same inputs (hashed into the key).
INFERENCE_SOURCES = (
    Path(__file__).with_name("inference.py"),
    Path(__file__).resolve().parents[2] / "prompting.py",
    Path(__file__).resolve().parents[2] / "modeling.py",
    Path(__file__).resolve().parents[2] / "decoding.py",
    Path(__file__).resolve().parents[2] / "numerics.py",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json")
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file (read in 4 MiB chunks), remembered per (path, size, mtime) in this
    process: a 1 GB checkpoint is read once (~2 s), not at every call."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def weights_fingerprint(name_or_path: str) -> str:
    """Hash of every weight file's name and whole content (:func:`file_sha256`): two checkpoints that
    differ in any byte differ here. A Hub id (not a folder) hashes to its name."""
    folder = Path(name_or_path)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    if not files:
        digest.update(str(name_or_path).encode())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(name_or_path: str) -> str:
    """Hash of the tokenizer's files (whole content) in the model folder; a Hub id hashes to its name."""
    folder = Path(name_or_path)
    files = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()] if folder.is_dir() else []
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    if not files:
        digest.update(f"tokenizer of {name_or_path}".encode())
    return digest.hexdigest()[:16]


def code_fingerprint() -> dict:
    """Versions of the libraries that compute the results and a hash of the inference code's source:
    a new torch or an edited ``inference.py`` invalidates cached base results without anyone
    remembering to bump a number."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    digest = hashlib.sha256()
    for path in INFERENCE_SOURCES:
        digest.update(f"{path.name}:".encode() + path.read_bytes())
    return {"libraries": versions, "inference_source": digest.hexdigest()[:16]}


def test_set_hash(rows: list[dict]) -> str:
    """Content hash of the rows as evaluated (id, task type, context, question, reference)."""
    fields = [[row["id"], row["task_type"], row["input"], row["instruction"], row["output"]] for row in rows]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def base_results_key(identity: dict, weights: str, rows: list[dict], settings: dict,
                     extra: dict | None = None) -> tuple[str, dict]:
    """(key, the fields it hashes): base-model identity + weights (whole files), test-set content, inference
    settings (:data:`KEY_SETTINGS`: batch size, threads, dtype, tokenizer files ...), library versions and the
    inference code's source hash (:func:`code_fingerprint`), and `extra` (further settings of the caller, e.g. the context mode) when given."""
    fields = {
        "base_model": {key: identity[key] for key in ("name", "architecture", "config_sha256")},
        "weights": weights,
        "test_set": test_set_hash(rows),
        "rows": len(rows),
        "settings": {key: settings[key] for key in KEY_SETTINGS},
        "code": code_fingerprint(),
    }
    if extra:
        fields["extra"] = extra
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16], fields
