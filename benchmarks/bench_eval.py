"""Benchmark: the evaluate pipeline's inference vs the seed notebook's way, per test set.

The seed notebook answered test questions one at a time (tokenize one prompt, call
`model.generate`, decode), then scored in a separate pass (one teacher-forced forward over
prompt + reference per question, full logits). The evaluate pipeline (`Evaluator.run`)
sorts prompts by length, left-pads them into batches and runs each prompt ONCE: its KV
cache serves the log-likelihood choice, the teacher-forced reference loss (only the answer
tokens are fed) and the greedy answer. Both run here on the same model, dtype, prompts (the
training template, `tokenize_example` with the train pipeline's `max_length`) and greedy
settings, one after the other in one process; the script prints each side's wall time for
the whole test set, the ratio, and checks that answers are identical and losses equal.

    .venv/bin/python benchmarks/bench_eval.py                  # 48 questions, batch 16
    .venv/bin/python benchmarks/bench_eval.py --n 16 --max-new-tokens 32 --threads 1

Questions: a seeded sample of the paper's published v3 (vendored in data/03_primary/published).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, load_tokenizer, resolve_dtype, resolve_model_path
from kaggle_qa.pipelines.evaluate.inference import Evaluator, candidate_token_ids
from kaggle_qa.qa_schema import first_word, infer_task_type

ROOT = Path(__file__).resolve().parents[1]
CHOICES = yaml.safe_load((ROOT / "conf/base/parameters_evaluate.yml").read_text())["evaluate"]["choices"]
MAX_LENGTH = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text())["train"]["max_length"]


@torch.inference_mode()
def seed_notebook_way(model, tokenizer, examples, candidates, max_new_tokens: int) -> tuple[list[dict], float]:
    """One unbatched `generate` per question, then a separate full forward per question for loss and choice."""
    started, results = time.perf_counter(), []
    for example in tqdm(examples, desc="one generate per question", unit="answer"):
        ids = torch.tensor([example.input_ids[: example.prompt_length]])
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        tokens = output[0, ids.shape[1]:].tolist()
        tokens = tokens[: tokens.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in tokens else tokens
        results.append({"answer": tokenizer.decode(tokens, skip_special_tokens=True).strip()})
    for i, (example, result) in enumerate(tqdm(list(zip(examples, results)), desc="separate scoring pass", unit="item")):
        full = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels]))
        result["answer_loss"] = full.loss.item()
        if i in candidates:
            logits = full.logits[0, example.prompt_length - 1]
            result["choice"] = max(candidates[i], key=lambda word: logits[candidates[i][word]].item())
    return results, time.perf_counter() - started


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
    for row in rows:
        row["task_type"] = infer_task_type(row)
    dtype = resolve_dtype(args.dtype)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=dtype, attn_implementation="sdpa")
    evaluator = Evaluator(model, tokenizer, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                          max_length=MAX_LENGTH)
    examples = evaluator.examples(rows)
    table = candidate_token_ids(tokenizer, CHOICES)
    candidates = {i: table[row["task_type"]] for i, row in enumerate(rows) if row["task_type"] in table
                  and first_word(row["output"]) in {first_word(word) for word in CHOICES[row["task_type"]]}}

    ours, ours_seconds = evaluator.run(examples, candidates, whole_sequence=False, label="one prefill per item")
    seed, seed_seconds = seed_notebook_way(model, tokenizer, examples, candidates, args.max_new_tokens)
    same = sum(o["answer"] == s["answer"] for o, s in zip(ours, seed))
    same_choice = sum(ours[i]["choice"] == seed[i]["choice"] for i in candidates)
    loss_gap = max(abs(o["answer_nll"] / o["answer_tokens"] - s["answer_loss"]) for o, s in zip(ours, seed))
    print(f"\nmodel {model_path}, {dtype}, {torch.get_num_threads()} threads, {args.n} questions "
          f"({len(candidates)} labelled), max_new_tokens {args.max_new_tokens}, max_length {MAX_LENGTH}")
    print(f"seed notebook (generate per question + scoring pass): {seed_seconds:7.1f} s")
    print(f"evaluate pipeline (batch {args.batch_size}, one prefill per item) : {ours_seconds:7.1f} s")
    print(f"speed-up                   : {seed_seconds / ours_seconds:7.2f}x")
    print(f"identical answers          : {same}/{args.n}; identical choices {same_choice}/{len(candidates)}; "
          f"max answer-loss difference {loss_gap:.2e}")


if __name__ == "__main__":
    main()
