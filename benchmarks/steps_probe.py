"""Does the label decision become learnable with more steps? (A GPU-sized question.)

Trains the default recipe's LoRA (r 64, alpha 128, all linear layers, AdamW 2e-4 cosine, 3 %
warm-up, clip 0.3, 8 rows a step, label token weight 4) on a v3 file for several step budgets,
each a fresh run with its own schedule, and scores the label choice (the first answer token's
logits over "True"/"False", "Yes"/"No", as evaluate's log-likelihood choice does) on:

- its own training rows (a seeded sample: can it fit what it is shown?),
- a test file's labelled rows (our qa_v2),
- the paper's published v3 (the cross-teacher items, the same seeded 240 as recipe_probe.py).

It needs only torch, transformers and peft (not kedro), so it runs on a lent GPU machine:

    python benchmarks/steps_probe.py --gguf /tmp/gemma-3-270m-q4_k_m.gguf --train v3.json --name ours \\
        --test v2.json --cross data/03_primary/published/kaggle_docs_QA_v3.json --steps 100,300,1000 --out results.jsonl

(`--model-dir data/06_models/base_model` instead of `--gguf` on this machine.) One JSON line per
(data, steps) is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kaggle_qa.prompting import IGNORE_INDEX, candidate_token_ids, tokenize_example  # noqa: E402
from kaggle_qa.qa_schema import LABEL_CHOICES, infer_task_type  # noqa: E402

LABELLED = ("true_false", "yes_no")


def load(args, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.gguf:
        folder, name = str(Path(args.gguf).parent), Path(args.gguf).name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return tokenizer, model.to(device=device, dtype=dtype)


def examples(tokenizer, rows, max_length, candidates):
    out = []
    for row in rows:
        if not row.get("input"):
            continue
        example = tokenize_example(tokenizer, row["input"], row["instruction"], row["output"], max_length)
        if example.truncated or all(label == IGNORE_INDEX for label in example.labels):
            continue
        ids = candidates.get(infer_task_type(row))
        position = example.prompt_length
        label_position = position if ids and position < len(example.input_ids) and example.input_ids[position] in ids else -1
        out.append({"input_ids": example.input_ids, "labels": example.labels, "label_position": label_position,
                    "candidates": ids or []})
    return out


def batch(items, pad_id, device):
    width = max(len(e["input_ids"]) for e in items)
    ids = torch.full((len(items), width), pad_id)
    labels = torch.full((len(items), width), IGNORE_INDEX)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return ids.to(device), labels.to(device), mask.to(device)


def weighted_loss(logits, labels, items, label_weight):
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    weights = (shift_labels != IGNORE_INDEX).float()
    for row, e in enumerate(items):
        if e["label_position"] > 0:
            weights[row, e["label_position"] - 1] = label_weight
    losses = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1).clamp(min=0),
                             reduction="none").view_as(weights)
    return (losses * weights).sum() / weights.sum()


@torch.no_grad()
def score(model, items, pad_id, device, size=16):
    items = [e for e in items if e["label_position"] > 0]
    model.eval()
    choices = []
    for start in range(0, len(items), size):
        part = items[start : start + size]
        ids, _, mask = batch(part, pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=ids, attention_mask=mask).logits
        for row, e in enumerate(part):
            at = logits[row, e["label_position"] - 1]
            choices.append((max(e["candidates"], key=lambda t: float(at[t])), e["input_ids"][e["label_position"]]))
    model.train()
    if not choices:
        return {}
    chosen = [c for c, _ in choices]
    golds = sorted({g for _, g in choices})
    recalls = [sum(c == g for c, gg in choices if gg == g) / sum(gg == g for _, gg in choices) for g in golds]
    return {"n": len(choices), "accuracy": round(sum(c == g for c, g in choices) / len(choices), 4),
            "balanced": round(sum(recalls) / len(recalls), 4),
            "top_share": round(max(chosen.count(c) for c in set(chosen)) / len(chosen), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf")
    parser.add_argument("--model-dir", default=str(ROOT / "data/06_models/base_model"))
    parser.add_argument("--train", action="append", required=True, help="a v3 file (repeatable)")
    parser.add_argument("--name", action="append", required=True, help="a name per --train")
    parser.add_argument("--test", required=True)
    parser.add_argument("--cross", default=str(ROOT / "data/03_primary/published/kaggle_docs_QA_v3.json"))
    parser.add_argument("--steps", default="100,300,1000")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--label-weight", type=float, default=4.0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--eval-limit", type=int, default=None, help="rows per scored set (smoke tests)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, base = load(args, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    candidates = {t: list(ids.values()) for t, ids in candidate_token_ids(tokenizer, LABEL_CHOICES).items()}
    cross_rows = [r for r in json.loads(Path(args.cross).read_text()) if infer_task_type(r) in LABELLED and r.get("input")]
    cross_rows = random.Random(0).sample(cross_rows, min(240, len(cross_rows)))  # recipe_probe.py's sample
    test_rows = [r for r in json.loads(Path(args.test).read_text()) if infer_task_type(r) in LABELLED]
    sets = {"cross": examples(tokenizer, cross_rows, args.max_length, candidates),
            "test": examples(tokenizer, test_rows, args.max_length, candidates)}
    if args.eval_limit:
        sets = {k: v[: args.eval_limit] for k, v in sets.items()}
    base_scores = {k: score(base, v, pad_id, device) for k, v in sets.items()}
    print(json.dumps({"base": base_scores}), flush=True)
    initial = {k: v.detach().clone() for k, v in base.state_dict().items()}
    for name, path in zip(args.name, args.train):
        train = examples(tokenizer, json.loads(Path(path).read_text()), args.max_length, candidates)
        fit = [e for e in train if e["label_position"] > 0 and len(e["candidates"]) == 2]  # true/false, yes/no
        fit = random.Random(1).sample(fit, min(200, len(fit)))[: args.eval_limit or None]
        for steps in [int(s) for s in args.steps.split(",")]:
            base.load_state_dict(initial)
            torch.manual_seed(42)
            model = get_peft_model(base, LoraConfig(r=64, lora_alpha=128, lora_dropout=0.05, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
            warmup = max(1, round(0.03 * steps))
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
            rng, order, started, losses = random.Random(42), [], time.perf_counter(), []
            for step in range(steps):
                if len(order) < args.batch:
                    order += rng.sample(range(len(train)), len(train))
                items, order = [train[i] for i in order[: args.batch]], order[args.batch :]
                ids, labels, mask = batch(items, pad_id, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                loss = weighted_loss(logits, labels, items, args.label_weight)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 0.3)
                optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
            record = {"data": name, "file": path, "steps": steps, "epochs": round(steps * args.batch / len(train), 2),
                      "train_rows": len(train), "seconds": round(time.perf_counter() - started, 1),
                      "last_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4), "lr": args.lr,
                      "label_weight": args.label_weight, "device": device.type,
                      "train_fit": score(model, fit, pad_id, device),
                      **{k: score(model, v, pad_id, device) for k, v in sets.items()}, "base": base_scores}
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            base = model.unload()  # the base weights again (restored from `initial` next round)


if __name__ == "__main__":
    main()
