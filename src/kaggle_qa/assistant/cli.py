"""Command line: ``kaggle-qa ask "…" [--json]``, ``kaggle-qa chat``, ``kaggle-qa serve``.

Run from the project folder after ``kedro run`` (ingestion for the index, train for the
adapter): the base model, the latest adapter, ``retrieval_index`` and the ``retrieval`` /
``assistant`` parameters come from the catalog (``--env`` picks an environment).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from kaggle_qa.domain import chat_greeting

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
    inputs = load_inputs(args.project_path, args.env, use_adapter=not args.base_only)
    retrieval = dict(inputs.retrieval)
    assistant = dict(inputs.assistant)
    if args.top_k is not None:
        retrieval["top_k"] = args.top_k
    if args.method is not None:
        retrieval["method"] = args.method
    if args.max_new_tokens is not None:
        assistant["max_new_tokens"] = args.max_new_tokens
    loaded = Assistant.load(inputs.base_model, inputs.adapter, inputs.retrieval_index, retrieval, assistant, inputs.domain,
                            retrieval_metrics=inputs.retrieval_metrics, training_params=inputs.training_params)
    return loaded, assistant


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
    assistant, settings = load_assistant(args)
    if args.command == "ask":
        for question in args.question:
            print_answer(assistant.ask(question), args.json)
    elif args.command == "chat":
        chat(assistant)
    else:
        from .server import serve

        serve(assistant, settings["server"], args.host, args.port)
    return 0
