"""Benchmark: the evaluate pipeline's inference vs the seed notebook's way, per test set.

The seed notebook answered test questions one at a time (tokenize one prompt, call
`model.generate`, decode), then scored in a separate pass (one teacher-forced forward over
prompt + reference per question, full logits). The evaluate pipeline (`Evaluator.run`) runs
ONE unpadded forward per item over prompt + reference, which serves the log-likelihood
choice, the teacher-forced reference loss (LM head on the answer positions only) and the
prompt's KV cache, from which the greedy answers of a length-sorted batch are decoded
together (float32 on CPU: linears prepacked for oneDNN). Both run here on the same model,
dtype, prompts (the training template, `tokenize_example` with the train pipeline's
`max_length`) and greedy settings, in one process.

Each of `--repeats` rounds times both sides on the whole sample, alternating which goes
first (ours, seed; seed, ours; ...). The script prints every run, each side's median wall
time, the median of the per-round ratios (seed / ours), and checks that answers and choices
are identical and losses equal; the report goes to `--output` (a JSON object with one entry
per dtype, so the bf16 and float32 runs sit side by side; an entry is replaced by a rerun).

    .venv/bin/python benchmarks/bench_eval.py                  # 48 questions, batch 16
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval.py --n 16 --max-new-tokens 32 --threads 1 --repeats 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval.py --n 16 --max-new-tokens 32 --threads 1 --dtype float32

Questions: a seeded sample of the paper's published v3 (vendored in data/03_primary/published).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, load_tokenizer, resolve_dtype, resolve_model_path
from kaggle_qa.pipelines.evaluate.inference import Evaluator, candidate_token_ids
from kaggle_qa.pipelines.evaluate.nodes import label_choices
from kaggle_qa.qa_schema import first_word, infer_task_type

ROOT = Path(__file__).resolve().parents[1]
CHOICES = label_choices(yaml.safe_load((ROOT / "conf/base/parameters_evaluate.yml").read_text())["evaluate"])
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


def cpu_description() -> dict:
    """Model name and the SIMD features that decide the dtype (AVX2 only: float32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model_name": None, "flags": []}
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"model_name": names[0] if names else None, "logical_cpus": len(names),
            "flags": sorted({flag for flag in text.split() if flag in wanted})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each times both sides, alternating the order")
    parser.add_argument("--model", default=str(ROOT / "data/06_models/base_model"))
    parser.add_argument("--questions", default=str(ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json"))
    parser.add_argument("--output", default=str(ROOT / "data/08_reporting/bench_eval.json"))
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

    sides = {
        "ours": lambda: evaluator.run(examples, candidates, whole_sequence=False, label="one forward per item"),
        "seed": lambda: seed_notebook_way(model, tokenizer, examples, candidates, args.max_new_tokens),
    }
    seconds: dict[str, list[float]] = {"ours": [], "seed": []}
    outputs: dict[str, list[list[dict]]] = {"ours": [], "seed": []}
    for round_ in range(args.repeats):
        for name in ("ours", "seed") if round_ % 2 == 0 else ("seed", "ours"):
            result, taken = sides[name]()
            outputs[name].append(result)
            seconds[name].append(taken)
            print(f"round {round_ + 1}/{args.repeats} {name}: {taken:.1f} s", flush=True)

    ours, seed = outputs["ours"][0], outputs["seed"][0]
    same = sum(o["answer"] == s["answer"] for o, s in zip(ours, seed))
    same_choice = sum(ours[i]["choice"] == seed[i]["choice"] for i in candidates)
    loss_gap = max(abs(o["answer_nll"] / o["answer_tokens"] - s["answer_loss"]) for o, s in zip(ours, seed))
    stable = all([r["answer"] for r in run] == [r["answer"] for r in outputs[name][0]]
                 for name in outputs for run in outputs[name])
    ratios = [s / o for s, o in zip(seconds["seed"], seconds["ours"])]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    report = {
        "command": " ".join(["benchmarks/bench_eval.py", *sys.argv[1:]]),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_description(), "device": str(evaluator.device), "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "n": args.n, "labelled": len(candidates),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "max_length": MAX_LENGTH,
        "repeats": args.repeats, "order": "round k: ours first when k is odd (1-based), seed first otherwise",
        "seconds": seconds, "median_seconds": medians,
        "ratio_per_round": ratios, "median_ratio": statistics.median(ratios),
        "ratio_of_medians": medians["seed"] / medians["ours"],
        "identical_answers": same, "identical_choices": same_choice,
        "max_answer_loss_difference": loss_gap, "answers_same_in_every_round": stable,
    }
    output = Path(args.output)
    existing = json.loads(output.read_text()) if output.exists() else {}
    existing[report["dtype"]] = report
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(existing, indent=2))

    print(f"\nmodel {model_path}, {report['dtype']}, {report['threads']} threads, {args.n} questions "
          f"({len(candidates)} labelled), max_new_tokens {args.max_new_tokens}, max_length {MAX_LENGTH}, "
          f"cpu {report['cpu']['model_name']} {' '.join(report['cpu']['flags'])}")
    for name, label in (("seed", "seed notebook (generate per question + scoring pass)"),
                        ("ours", f"evaluate pipeline (batch {args.batch_size}, one forward per item)")):
        print(f"{label:55s}: median {medians[name]:7.1f} s  (runs {', '.join(f'{t:.1f}' for t in seconds[name])})")
    print(f"{'speed-up (median of per-round ratios, seed / ours)':55s}: {report['median_ratio']:7.2f}x "
          f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; ratio of medians {report['ratio_of_medians']:.2f}x)")
    print(f"identical answers          : {same}/{args.n}; identical choices {same_choice}/{len(candidates)}; "
          f"max answer-loss difference {loss_gap:.2e}; answers the same in every round: {stable}")
    print(f"report: {output}")


if __name__ == "__main__":
    main()
