"""Generation on an OpenAI-compatible server: the engine behind ``kaggle-qa serve --backend-url``.

The front end (retrieval, the "not covered" refusal, citations: :class:`~.core.Assistant`) stays
in our process; only the continuation of the prompt is asked of the server. Which API:

- ``completions`` (default): ``POST /v1/completions`` with the prompt *text* of
  :func:`kaggle_qa.prompting.render_prompt`, exactly what the model was trained on (the server
  adds BOS as its tokenizer does; vLLM, SGLang, llama.cpp's server and ``kaggle-qa serve``
  all serve this endpoint). Use this for our base model and fine-tuned adapters.
- ``chat``: ``POST /v1/chat/completions`` with that prompt as the one user message. The server
  wraps it in its chat template, which the fine-tuned model never saw in training: only for
  servers without ``/v1/completions`` (hosted chat models).

:func:`vllm_command` builds the ``vllm serve`` command line (pure, tested); :class:`ChildServer`
runs such a command as a child process and waits until ``/health`` answers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai

from .core import Generation, Sampling

logger = logging.getLogger(__name__)

APIS = ("completions", "chat")


class BackendError(RuntimeError):
    """The backend server failed or could not be reached; the message names its URL."""


class EngineUnavailable(BackendError):
    """--engine vllm on a machine without CUDA or without the vllm package."""


class OpenAIBackend:
    """Continues prompts on an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str, model: str | None = None, *, api: str = "completions",
                 api_key: str | None = None, timeout_s: float = 300.0):
        if api not in APIS:
            raise ValueError(f"backend api {api!r}: expected one of {APIS}")
        self.base_url, self.api = base_url.rstrip("/"), api
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                    max_retries=0, timeout=timeout_s)
        self.model = model or self._only_model()

    def _only_model(self) -> str:
        """The one model the server lists; with several, the caller must name one (--backend-model)."""
        try:
            ids = [m.id for m in self.client.models.list()]
        except openai.APIError as exc:
            raise BackendError(f"backend {self.base_url}: cannot list its models ({exc})") from None
        if len(ids) != 1:
            raise BackendError(f"backend {self.base_url} serves {ids}: name one with --backend-model")
        return ids[0]

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/{'completions' if self.api == 'completions' else 'chat/completions'}"

    def complete(self, prompt: str, max_new_tokens: int, sampling: Sampling, *,
                 on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> Generation:
        """The server's continuation of `prompt` (streamed to `on_text` when given)."""
        request = {"model": self.model, "max_tokens": max_new_tokens, "temperature": sampling.temperature or 0.0}
        if sampling.top_p is not None:
            request["top_p"] = sampling.top_p
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        if self.api == "completions":
            create, request["prompt"] = self.client.completions.create, prompt
        else:
            create, request["messages"] = self.client.chat.completions.create, [{"role": "user", "content": prompt}]
        try:
            if on_text is None and cancel is None:
                return self._whole(create(**request))
            return self._streamed(create(**request, stream=True), on_text, cancel)
        except openai.NotFoundError as exc:
            hint = " (no /v1/completions here? try --backend-api chat)" if self.api == "completions" else ""
            raise BackendError(f"backend {self.endpoint} answered 404 for model {self.model!r}{hint}: {exc}") from None
        except openai.APIStatusError as exc:
            raise BackendError(f"backend {self.endpoint} answered HTTP {exc.status_code}: {exc}") from None
        except openai.APIConnectionError as exc:
            raise BackendError(f"backend {self.endpoint} unreachable: {exc}") from None

    def _text(self, choice) -> str:
        if self.api == "completions":
            return choice.text or ""
        return (choice.message.content if hasattr(choice, "message") else choice.delta.content) or ""

    def _whole(self, response) -> Generation:
        choice, usage = response.choices[0], response.usage
        return Generation(self._text(choice), choice.finish_reason or "stop",
                          getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)

    def _streamed(self, stream, on_text, cancel) -> Generation:
        pieces, finish = [], "stop"
        try:
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    break  # closing the stream tells the server to stop generating
                if not chunk.choices:
                    continue
                piece = self._text(chunk.choices[0])
                if piece:
                    pieces.append(piece)
                    if on_text:
                        on_text(piece)
                finish = chunk.choices[0].finish_reason or finish
        finally:
            stream.close()
        return Generation("".join(pieces), finish, 0, 0)


# vLLM's --max-lora-rank accepts these values only
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_command(model: str, *, served_name: str, host: str, port: int, adapter: str | None = None,
                 lora_name: str | None = None, lora_rank: int | None = None, max_model_len: int | None = None,
                 dtype: str = "auto", executable: str = "vllm", extra_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``vllm serve`` command line serving `model`, plus `adapter` as a LoRA module named
    `lora_name` (with ``--max-lora-rank`` rounded up to a rank vLLM accepts)."""
    command = [executable, "serve", str(model), "--served-model-name", served_name, "--host", host,
               "--port", str(port), "--dtype", dtype]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if adapter:
        if not lora_name:
            raise ValueError("vllm_command: an adapter needs a lora_name")
        command += ["--enable-lora", "--lora-modules", f"{lora_name}={adapter}"]
        if lora_rank:
            fits = [r for r in VLLM_LORA_RANKS if r >= lora_rank]
            if not fits:
                raise ValueError(f"LoRA rank {lora_rank} is above vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")
            command += ["--max-lora-rank", str(fits[0])]
    return command + list(extra_args)


def lora_rank(adapter: str | Path) -> int:
    """The largest LoRA rank in a peft adapter folder (adapter_config.json: r and rank_pattern)."""
    import json

    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])


def merged_checkpoint(base_model: str, adapter: str | Path, folder: str | Path) -> Path:
    """Base + adapter merged as the assistant merges them (a QLoRA adapter into the dequantized NF4
    base it was trained on) and saved once under `folder`, for a server that loads plain weights."""
    import hashlib

    from kaggle_qa.modeling import load_finetuned_model, load_tokenizer

    key = hashlib.sha256(str(Path(adapter).resolve()).encode()).hexdigest()[:12]
    target = Path(folder) / f"merged-{key}"
    if (target / "config.json").exists():
        return target
    logger.info("Merging %s into %s for the serving engine (once)", adapter, base_model)
    partial = target.with_name(target.name + ".partial")
    load_finetuned_model(base_model, adapter).save_pretrained(partial)
    load_tokenizer(base_model).save_pretrained(partial)
    os.replace(partial, target)
    return target


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_vllm_available() -> str:
    """The ``vllm`` executable; a clear error when CUDA or the vllm package is missing."""
    import importlib.util
    import shutil

    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailable("--engine vllm needs a CUDA GPU, and torch sees none here; the built-in engine "
                           "(no --engine) runs on CPU, or point --backend-url at a vLLM server elsewhere")
    if importlib.util.find_spec("vllm") is None:
        raise EngineUnavailable("--engine vllm needs the vllm package (pip install vllm, which brings its own CUDA "
                           "torch: install it in a separate environment and use --backend-url if they clash)")
    here = Path(sys.executable).with_name("vllm")
    found = str(here) if here.exists() else shutil.which("vllm")
    if not found:
        raise EngineUnavailable("the vllm package is installed but its `vllm` command is not on PATH")
    return found


class ChildServer:
    """A server command run as a child process (its own process group) until `stop`.

    `start` waits until ``GET {health_url}`` answers 200, failing early (with the tail of its
    output) when the child exits first, or after `timeout_s`.
    """

    def __init__(self, command: list[str], health_url: str, log_path: str | Path, timeout_s: float = 900.0):
        self.command, self.health_url, self.log_path, self.timeout_s = command, health_url, Path(log_path), timeout_s
        self.process: subprocess.Popen | None = None

    def start(self) -> ChildServer:
        import httpx2 as httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        logger.info("Starting %s (log: %s)", " ".join(self.command), self.log_path)
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline, shown = time.monotonic() + self.timeout_s, time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited with code {self.process.returncode} before "
                                   f"{self.health_url} answered; its log ends:\n{self.log_tail()}")
            try:
                if httpx.get(self.health_url, timeout=2).status_code == 200:
                    logger.info("%s is up", self.health_url)
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.health_url} did not answer within {self.timeout_s:.0f} s; log: {self.log_path}")
            if time.monotonic() - shown > 30:
                logger.info("Waiting for %s (%.0f s so far)", self.health_url, time.monotonic() - deadline + self.timeout_s)
                shown = time.monotonic()
            time.sleep(1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> ChildServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
