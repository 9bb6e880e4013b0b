"""Command line: ``kaggle-qa ask "…" [--json]``, ``kaggle-qa chat``, ``kaggle-qa serve``.

Run from the project folder after ``kedro run`` (ingestion for the index, train for the
adapter): the base model, the latest adapter, ``retrieval_index`` and the ``retrieval`` /
``assistant`` parameters come from the catalog (``--env`` picks an environment).

Generation runs in this process (the built-in engine, CPU default), or on an OpenAI-compatible
server: ``--backend-url URL`` for one already running (vLLM, SGLang, llama.cpp, another
``kaggle-qa serve``), ``serve --engine vllm`` to start ``vllm serve`` as a child process.
Retrieval, the "not covered" refusal and citations stay in this process. See docs/assistant.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from kaggle_qa.domain import chat_greeting

from .backend import APIS, BackendError, OpenAIBackend, check_vllm_available
from .catalog import load_inputs, logs_to_stderr
from .core import Answer, Assistant


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="Kedro environment (default: local over base)")
    parser.add_argument("--project-path", default=".", help="the Kedro project folder (default: .)")
    parser.add_argument("--base-only", action="store_true", help="the base model without the fine-tuned adapter")
    parser.add_argument("--top-k", type=int, default=None, help="chunks given as context (default: retrieval.top_k)")
    parser.add_argument("--method", choices=["dense", "bm25", "hybrid"], default=None,
                        help="retrieval method (default: retrieval.method)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: assistant.max_new_tokens")
    parser.add_argument("--conf-source", default=None,
                        help="configuration folder other than <project>/conf (as kedro run --conf-source)")
    parser.add_argument("--backend-url", default=None,
                        help="generate on this OpenAI-compatible server (e.g. http://127.0.0.1:8001/v1); "
                             "retrieval, refusal and citations stay here")
    parser.add_argument("--backend-model", default=None,
                        help="the model name to ask the backend for (default: the one it lists)")
    parser.add_argument("--backend-api", choices=APIS, default="completions",
                        help="completions (default): the training prompt as text on /v1/completions; chat: as "
                             "one user message on /v1/chat/completions (for servers without /v1/completions)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaggle-qa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer questions, with sources")
    ask.add_argument("question", nargs="+", help="one or more questions")
    ask.add_argument("--json", action="store_true", help="one JSON object per answer (for scripts)")
    _common(ask)
    chat = commands.add_parser("chat", help="interactive session (empty line or Ctrl-D ends it)")
    _common(chat)
    serve = commands.add_parser("serve", help="OpenAI-compatible HTTP server")
    serve.add_argument("--host", default=None, help="default: assistant.server.host (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default: assistant.server.port")
    serve.add_argument("--engine", choices=["builtin", "vllm"], default="builtin",
                       help="builtin (default): the model runs in this process; vllm: start `vllm serve` "
                            "(CUDA and the vllm package needed) and generate there")
    serve.add_argument("--vllm-port", type=int, default=None, help="port for vllm serve (default: a free one)")
    serve.add_argument("--vllm-adapter", choices=["auto", "lora", "merged"], default="auto",
                       help="lora: vLLM applies the adapter (--enable-lora); merged: serve base+adapter merged "
                            "here first; auto (default): merged for a QLoRA (4-bit) adapter, else lora")
    serve.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                       help="one more argument for vllm serve (repeatable), e.g. --vllm-arg=--gpu-memory-utilization=0.5")
    _common(serve)
    return parser


def load_assistant(args: argparse.Namespace) -> tuple[Assistant, dict]:
    """The assistant from the project's catalog and parameters, with command-line overrides.

    Everything printed while loading, and every log record after, goes to stderr: stdout
    carries only the answers.
    """
    with contextlib.redirect_stdout(sys.stderr):
        loaded, assistant = _load(args)
    logs_to_stderr()
    return loaded, assistant


def _load(args: argparse.Namespace) -> tuple[Assistant, dict]:
    engine = getattr(args, "engine", "builtin")
    if engine == "vllm" and args.backend_url:
        raise SystemExit("kaggle-qa serve: --engine vllm starts its own backend; do not also give --backend-url")
    vllm = check_vllm_available() if engine == "vllm" else None  # fail before loading anything
    backend = None
    if args.backend_url:  # reach the backend before loading anything
        backend = OpenAIBackend(args.backend_url, args.backend_model, api=args.backend_api)
    # with --backend-url the backend holds the weights: no adapter needed here
    inputs = load_inputs(args.project_path, args.env, use_adapter=not args.base_only and not args.backend_url,
                         conf_source=args.conf_source)
    retrieval = dict(inputs.retrieval)
    assistant = dict(inputs.assistant)
    if args.top_k is not None:
        retrieval["top_k"] = args.top_k
    if args.method is not None:
        retrieval["method"] = args.method
    if args.max_new_tokens is not None:
        assistant["max_new_tokens"] = args.max_new_tokens
    child = None
    if vllm:
        child, url, model = start_vllm(vllm, args, inputs, assistant)
        try:
            backend = OpenAIBackend(url, model)
        except BackendError:
            child.stop()
            raise
    loaded = Assistant.load(inputs.base_model, inputs.adapter, inputs.retrieval_index, retrieval, assistant, inputs.domain,
                            retrieval_metrics=inputs.retrieval_metrics, training_params=inputs.training_params,
                            backend=backend)
    loaded.child_server = child
    return loaded, assistant


def start_vllm(executable: str, args: argparse.Namespace, inputs, assistant: dict):
    """Start `vllm serve` on the base model and adapter (LoRA or merged); (child, url, model name)."""
    from pathlib import Path

    from .backend import ChildServer, free_port, lora_rank, merged_checkpoint, vllm_command

    host, port = "127.0.0.1", args.vllm_port or free_port()
    trained = inputs.training_params or {}
    max_length = assistant.get("max_length") or int(trained.get("max_length", 512))
    adapter, mode = inputs.adapter, args.vllm_adapter
    if adapter and mode == "auto":
        mode = "merged" if (trained.get("quantization") or {}).get("load_in_4bit") else "lora"
    work = Path(args.project_path).resolve() / "data" / "06_models" / "vllm"
    model, lora = inputs.base_model, None
    if adapter and mode == "merged":
        model = str(merged_checkpoint(inputs.base_model, adapter, work))
    elif adapter:
        lora = adapter
    served = "kaggle-qa-merged" if adapter and lora is None else "kaggle-qa-base"
    lora_name = "kaggle-qa-adapter"
    dtype = assistant.get("dtype", "auto")
    command = vllm_command(model, served_name=served, host=host, port=port, adapter=lora, lora_name=lora_name,
                           lora_rank=lora_rank(lora) if lora else None, max_model_len=max_length,
                           dtype=dtype if dtype in ("bfloat16", "float16", "float32") else "auto",
                           executable=executable, extra_args=args.vllm_arg)
    child = ChildServer(command, f"http://{host}:{port}/health", work / f"vllm-{port}.log").start()
    return child, f"http://{host}:{port}/v1", lora_name if lora else served


def print_answer(answer: Answer, as_json: bool, out=None) -> None:
    """The answer and its sources as text, or one JSON object (`--json`)."""
    out = out or sys.stdout
    if as_json:
        print(json.dumps(answer.as_dict(), ensure_ascii=False), file=out)
        return
    print(f"Q: {answer.question}\nA: {answer.answer}", file=out)
    for n, c in enumerate(answer.citations, start=1):
        print(f"   [{n}] {c['url']} › {' › '.join(c['heading_path'])} ({c['score']:.2f})", file=out)
    out.flush()


def chat(assistant: Assistant, read=input, out=None) -> None:
    """Ask questions until an empty line or end of input."""
    out = out or sys.stdout
    domain = getattr(assistant, "domain", None)
    print(chat_greeting(domain) if domain else "Ask about the docs (empty line or Ctrl-D to quit).", file=out)
    while True:
        try:
            question = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not question:
            break
        print_answer(assistant.ask(question), as_json=False, out=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        assistant, settings = load_assistant(args)
    except BackendError as exc:
        print(f"kaggle-qa {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "ask":
            for question in args.question:
                print_answer(assistant.ask(question), args.json)
        elif args.command == "chat":
            chat(assistant)
        else:
            from .server import serve

            serve(assistant, settings["server"], args.host, args.port)
    except BackendError as exc:
        print(f"kaggle-qa {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        if assistant.child_server is not None:
            assistant.child_server.stop()
    return 0
