"""Ask the assistant: retrieve the best doc chunks, answer with the fine-tuned Gemma.

    .venv/bin/python -m kaggle_qa.assistant "How do I make a competition submission?"

Reads ``base_model``, the latest ``adapter`` and ``retrieval_index`` through the
project's catalog (``--env`` picks another environment), renders the same prompt the
model was trained and evaluated with, and prints the answer with its sources.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from kaggle_qa.modeling import load_model, load_tokenizer
from kaggle_qa.prompting import encode_prompt
from kaggle_qa.retrieval import search


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[dict]


class Assistant:
    """A base model (+ optional LoRA adapter) answering from retrieved documentation chunks."""

    def __init__(
        self,
        base_model: str,
        adapter: str | None,
        index: dict,
        *,
        top_k: int = 1,
        max_new_tokens: int = 128,
        dtype: str = "bfloat16",
    ):
        self.tokenizer = load_tokenizer(base_model)
        model = load_model(base_model, dtype=dtype)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.eval()
        self.index, self.top_k, self.max_new_tokens = index, top_k, max_new_tokens

    @torch.inference_mode()
    def ask(self, question: str) -> Answer:
        sources = search(self.index, question, k=self.top_k)
        context = "\n\n".join(source["text"] for source in sources)
        prompt = torch.tensor([encode_prompt(self.tokenizer, context, question)])
        output = self.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        text = self.tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True).strip()
        return Answer(question, text, sources)


def _from_catalog(env: str | None, use_adapter: bool) -> tuple[str, str | None, dict]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path.cwd())
    with KedroSession.create(env=env) as session:
        catalog = session.load_context().catalog
        adapter = catalog.load("adapter") if use_adapter else None
        return catalog.load("base_model"), adapter, catalog.load("retrieval_index")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="+", help="one or more questions")
    parser.add_argument("--env", default=None, help="Kedro environment (default: local)")
    parser.add_argument("--base-only", action="store_true", help="answer with the base model, no adapter")
    parser.add_argument("--top-k", type=int, default=1, help="chunks given as context")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    base_model, adapter, index = _from_catalog(args.env, not args.base_only)
    assistant = Assistant(base_model, adapter, index, top_k=args.top_k, max_new_tokens=args.max_new_tokens)
    for question in args.question:
        reply = assistant.ask(question)
        if args.json:
            print(json.dumps({"question": question, "answer": reply.answer, "sources": [
                {"url": s["url"], "heading_path": s["heading_path"], "score": round(s["score"], 3)}
                for s in reply.sources]}))
            continue
        print(f"Q: {question}\nA: {reply.answer}")
        for source in reply.sources:
            print(f"   source: {source['url']} › {' › '.join(source['heading_path'])} ({source['score']:.2f})")


if __name__ == "__main__":
    main()
