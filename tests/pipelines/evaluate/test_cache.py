"""The base-results cache key: every input that can change the base model's results changes the key."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from kaggle_qa.pipelines.evaluate import cache
from kaggle_qa.pipelines.evaluate.cache import base_results_key, tokenizer_fingerprint, weights_fingerprint

IDENTITY = {"name": "m", "architecture": "Gemma3ForCausalLM", "config_sha256": "abc"}
ROWS = [{"id": "0", "task_type": "true_false", "input": "c", "instruction": "q", "output": "True."}]
SETTINGS = {
    "max_length": 512, "max_new_tokens": 64, "dtype": "float32", "compute_dtype": "float32", "device_type": "cpu", "attn_implementation": "sdpa",
    "batch_size": 16, "num_threads": 2, "choices": {"true_false": ["True", "False"]}, "whole_sequence_loss": False,
    "prompt_template_version": "1", "tokenizer_files": "t0",
}


def key(settings=SETTINGS, weights="w0", rows=ROWS) -> str:
    return base_results_key(IDENTITY, weights, rows, settings)[0]


@pytest.mark.parametrize(("name", "value"), [
    ("batch_size", 8), ("num_threads", 1), ("dtype", "bfloat16"), ("compute_dtype", "bfloat16"), ("tokenizer_files", "t1"), ("max_new_tokens", 32),
    ("max_length", 256), ("attn_implementation", "eager"), ("device_type", "cuda"), ("whole_sequence_loss", True),
    ("choices", {"true_false": ["False", "True"]}), ("prompt_template_version", "2"),
])
def test_each_inference_setting_misses_the_cache(name, value):
    assert key({**SETTINGS, name: value}) != key()


def test_the_same_inputs_hit_the_cache_and_weights_or_rows_miss_it():
    assert key() == key(dict(SETTINGS))
    assert key(weights="w1") != key()
    assert key(rows=[{**ROWS[0], "output": "False."}]) != key()


def test_every_key_setting_is_required():
    for name in cache.KEY_SETTINGS:
        with pytest.raises(KeyError):
            key({k: v for k, v in SETTINGS.items() if k != name})


def test_library_versions_miss_the_cache(monkeypatch):
    before = key()
    real = importlib.metadata.version
    for library in ("torch", "transformers", "peft"):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, lib=library: "0.0-other" if name == lib else real(name))
        assert key() != before, library
    monkeypatch.setattr(importlib.metadata, "version", real)
    assert key() == before


def test_a_change_to_the_inference_code_misses_the_cache(tmp_path, monkeypatch):
    sources = []
    for source in cache.INFERENCE_SOURCES:
        copy = tmp_path / source.name
        copy.write_bytes(source.read_bytes())
        sources.append(copy)
    monkeypatch.setattr(cache, "INFERENCE_SOURCES", tuple(sources))
    before = key()
    assert json.loads(json.dumps(base_results_key(IDENTITY, "w0", ROWS, SETTINGS)[1]))["code"]["libraries"]["torch"]
    sources[0].write_text(sources[0].read_text() + "\n# one more line\n")
    assert key() != before


def test_the_inference_module_is_among_the_hashed_sources():
    assert Path(cache.__file__).with_name("inference.py") in cache.INFERENCE_SOURCES


def test_the_weights_fingerprint_reads_whole_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    data = bytearray(b"\0" * (3 << 20))  # 3 MiB: a change past the first MiB must show
    weights.write_bytes(bytes(data))
    before = weights_fingerprint(str(folder))
    assert weights_fingerprint(str(folder)) == before
    data[(2 << 20) + 5] = 1
    weights.write_bytes(bytes(data))
    assert weights_fingerprint(str(folder)) != before
    assert weights_fingerprint("google/gemma-3-270m") != weights_fingerprint("google/gemma-3-270m-it")


def test_the_tokenizer_fingerprint_follows_the_tokenizer_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    (tmp_path / "tokenizer_config.json").write_text('{"padding_side": "left"}')
    before = tokenizer_fingerprint(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text('{"padding_side": "right"}')
    assert tokenizer_fingerprint(str(tmp_path)) != before
    (tmp_path / "model.safetensors").write_text("weights are not the tokenizer")
    changed = tokenizer_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_text("other weights")
    assert tokenizer_fingerprint(str(tmp_path)) == changed
