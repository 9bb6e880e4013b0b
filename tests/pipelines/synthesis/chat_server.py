"""A real OpenAI-compatible chat-completions server on 127.0.0.1, scripted per test.

`ChatServer(behaviour)` serves POST /v1/chat/completions in a thread; `behaviour(n, body)`
returns what request number n (from 0) gets: a reply content string, or a `Reply` with an
HTTP status, headers, a delay, or raw content (or a raw body: `Reply(raw=b"<html>…", content_type=…)`,
as a proxy's error page would be). Every request's JSON body and headers are kept.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    content: str | None = None
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None  # sent as the body as is, with content_type
    content_type: str = "application/json"


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


def completion(content: str, model: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140},
    }


class ChatServer:
    def __init__(self, behaviour=lambda n, body: good_content(body)):
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
                    payload = json.dumps(completion(reply.content, body.get("model", ""))).encode()
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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
