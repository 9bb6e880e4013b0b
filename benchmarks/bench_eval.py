"""Benchmark: our batched evaluation inference vs one `generate` call per question.

The seed notebook answered test questions one at a time (tokenize one prompt, call
`model.generate`, decode). The evaluate pipeline sorts prompts by length, left-pads them
into batches and decodes them together with a KV cache. Both run here on the same model,
dtype, prompts (the training template, `encode_prompt`) and greedy settings, one after the
other in one process, and the script prints answers/s of each and the ratio.

    .venv/bin/python benchmarks/bench_eval.py                  # 48 questions, batch 16
    .venv/bin/python benchmarks/bench_eval.py --n 16 --max-new-tokens 32

Questions: a seeded sample of the paper's published v3 (vendored in data/03_primary/published).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, load_tokenizer, resolve_model_path
from kaggle_qa.modeling import resolve_dtype
from kaggle_qa.pipelines.evaluate.inference import Evaluator

ROOT = Path(__file__).resolve().parents[1]


def one_question_at_a_time(model, tokenizer, examples, max_new_tokens: int) -> tuple[list[str], float]:
    """The seed notebook's way: one unbatched `generate` call per question."""
    answers, started = [], time.perf_counter()
    for example in tqdm(examples, desc="one at a time", unit="answer"):
        ids = torch.tensor([example.input_ids[: example.prompt_length]])
        with torch.inference_mode():
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--model", default=str(ROOT / "data/06_models/base_model"))
    parser.add_argument("--questions", default=str(ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model_path(EMBEDDED_GEMMA, args.model) if "base_model" in args.model else args.model
    rows = random.Random(args.seed).sample(json.loads(Path(args.questions).read_text()), args.n)
    dtype = resolve_dtype(args.dtype)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=dtype, attn_implementation="sdpa")
    evaluator = Evaluator(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, max_length=512)
    examples = evaluator.examples(rows)

    batched, batched_seconds = evaluator.generate(examples, "batched")
    single, single_seconds = one_question_at_a_time(model, tokenizer, examples, args.max_new_tokens)
    same = sum(b["answer"] == s for b, s in zip(batched, single))
    print(f"\nmodel {model_path}, {dtype}, {torch.get_num_threads()} threads, {args.n} questions, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"one generate per question : {args.n / single_seconds:7.3f} answers/s ({single_seconds:.1f} s)")
    print(f"batched (batch {args.batch_size:3d})      : {args.n / batched_seconds:7.3f} answers/s ({batched_seconds:.1f} s)")
    print(f"speed-up                  : {single_seconds / batched_seconds:7.2f}x")
    print(f"identical answers         : {same}/{args.n}")


if __name__ == "__main__":
    main()
