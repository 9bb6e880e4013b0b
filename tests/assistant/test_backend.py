"""The serving-engine plumbing: the `vllm serve` command line (a pure function), the `--engine
vllm` refusal where CUDA or vLLM is missing, and `kaggle-qa ask --backend-url` as a real process."""

from __future__ import annotations

import json
import subprocess

import pytest

from kaggle_qa.assistant.backend import VLLM_LORA_RANKS, lora_rank, vllm_command

from .conftest import kaggle_qa_command


def test_vllm_command_with_a_lora_adapter():
    command = vllm_command("/models/base", served_name="kaggle-qa-base", host="127.0.0.1", port=8001,
                           adapter="/models/adapter", lora_name="kaggle-qa-adapter", lora_rank=64, max_model_len=512,
                           extra_args=["--gpu-memory-utilization", "0.5"])
    assert command == [
        "vllm", "serve", "/models/base", "--served-model-name", "kaggle-qa-base", "--host", "127.0.0.1",
        "--port", "8001", "--dtype", "auto", "--max-model-len", "512",
        "--enable-lora", "--lora-modules", "kaggle-qa-adapter=/models/adapter", "--max-lora-rank", "64",
        "--gpu-memory-utilization", "0.5",
    ]


def test_vllm_command_rounds_the_rank_up_and_serves_a_merged_model_without_lora():
    command = vllm_command("/m", served_name="s", host="h", port=1, adapter="/a", lora_name="n", lora_rank=48)
    assert command[command.index("--max-lora-rank") + 1] == "64"
    merged = vllm_command("/merged", served_name="kaggle-qa-merged", host="127.0.0.1", port=2, dtype="bfloat16",
                          executable="/venv/bin/vllm")
    assert merged[:3] == ["/venv/bin/vllm", "serve", "/merged"] and "--enable-lora" not in merged
    assert merged[merged.index("--dtype") + 1] == "bfloat16" and "--max-model-len" not in merged
    with pytest.raises(ValueError, match="needs a lora_name"):
        vllm_command("/m", served_name="s", host="h", port=1, adapter="/a")
    with pytest.raises(ValueError, match="above vLLM's largest"):
        vllm_command("/m", served_name="s", host="h", port=1, adapter="/a", lora_name="n", lora_rank=1024)
    assert VLLM_LORA_RANKS[-1] == 512


def test_lora_rank_reads_the_adapter_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"q_proj": 32}}))
    assert lora_rank(tmp_path) == 32


def test_engine_vllm_without_cuda_is_a_clear_error(project_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    command, env = kaggle_qa_command(project_root, "serve", "--engine", "vllm")
    done = subprocess.run(command, cwd=project_root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--engine vllm needs a CUDA GPU" in done.stderr and "Traceback" not in done.stderr


def test_ask_with_backend_url_answers_with_citations_from_this_process(project_root, conf_source, backend_process,
                                                                       tiny_assistant_for_server):
    """`kaggle-qa ask --backend-url`: retrieval and citations here, generation on the backend."""
    question = "Who can see a pending organization?"
    command, env = kaggle_qa_command(project_root, "ask", question, "--json", "--conf-source", conf_source,
                                     "--backend-url", backend_process.base_url + "/v1", "--max-new-tokens", "8")
    done = subprocess.run(command, cwd=project_root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["covered"] and record["citations"][0]["url"] == "https://www.kaggle.com/docs/organizations"
    assert record["answer"] == tiny_assistant_for_server.ask(question, max_new_tokens=8).answer
    unreachable = subprocess.run(command[:-4] + ["--backend-url", "http://127.0.0.1:9/v1"], cwd=project_root, env=env,
                                 capture_output=True, text=True, timeout=300)
    assert unreachable.returncode == 2 and "backend http://127.0.0.1:9/v1" in unreachable.stderr


def test_model_card_names_the_documentation(tiny_assistant_for_server):
    from kaggle_qa.assistant.server import model_card
    from kaggle_qa.domain import Domain

    assert "domain" not in model_card(tiny_assistant_for_server)
    domain = Domain(name="Click", docs_title="the Click documentation", audience="Click users",
                    docs_url="https://click.palletsprojects.com/")
    tiny_assistant_for_server.domain = domain
    try:
        card = model_card(tiny_assistant_for_server)
    finally:
        tiny_assistant_for_server.domain = None
    assert card["id"] == "kaggle-qa-tiny" and card["domain"] == {
        "name": "Click", "docs_title": "the Click documentation", "docs_url": "https://click.palletsprojects.com/"}
