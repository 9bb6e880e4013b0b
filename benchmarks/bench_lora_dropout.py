"""LoRA dropout on CPU: torch's nn.Dropout against FastDropout (train/dropout.py), per training step.

The real embedded Gemma 3 270M with the default LoRA (r 64, alpha 128, dropout 0.05, all linear
layers), float32 weights, bf16 autocast where the CPU has native bf16 (as the train pipeline runs
it), one micro-batch of ``--batch`` rows x ``--tokens`` tokens whose last ``--answer`` tokens carry
the loss (the project's answer loss), forward + backward. The two dropouts are swapped on the same
model and alternate ``--repeats`` times (median step seconds); the drop rate of each is counted.

    nice .venv/bin/python benchmarks/bench_lora_dropout.py --repeats 5 --profile

Writes benchmarks/results/bench_lora_dropout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=288)
    parser.add_argument("--answer", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one step with torch's dropout (torch.profiler; top operators by self time)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_lora_dropout.json"))
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, resolve_dtype, resolve_model_path
    from kaggle_qa.pipelines.train.dropout import FastDropout
    from kaggle_qa.pipelines.train.loss import answer_loss_sum

    torch.manual_seed(0)
    base_model = resolve_model_path(EMBEDDED_GEMMA, ROOT / "data/06_models/base_model")
    model = get_peft_model(load_model(base_model, dtype="float32"),
                           LoraConfig(r=64, lora_alpha=128, lora_dropout=0.05, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    causal_lm = model.get_base_model()
    model.train()
    layers = [m.lora_dropout for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
    kinds = {"torch nn.Dropout": lambda: torch.nn.Dropout(0.05), "FastDropout": lambda: FastDropout(0.05)}
    compute = resolve_dtype("auto")
    ids = torch.randint(10, 20000, (args.batch, args.tokens))
    labels = ids.clone()
    labels[:, : args.tokens - args.answer] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def step() -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute == "bfloat16"):
            loss, count = answer_loss_sum(causal_lm, batch, 1024)
        (loss / count).backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    seconds = {name: [] for name in kinds}
    drop_rates = {}
    for repeat in range(args.repeats):
        for name in (list(kinds) if repeat % 2 == 0 else list(reversed(kinds))):
            for dropouts in layers:
                dropouts["default"] = kinds[name]().train()
            step()  # warm-up after the swap
            seconds[name].append(step())
            print(f"{name}: {seconds[name][-1]:.2f} s per step", flush=True)
            probe = torch.ones(1_000_000)
            drop_rates[name] = float((layers[0]["default"](probe) == 0).float().mean())
    median = {name: statistics.median(values) for name, values in seconds.items()}
    profile = None
    if args.profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        for dropouts in layers:
            dropouts["default"] = kinds["torch nn.Dropout"]().train()
        step()
        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        profile = [{"op": e.key, "self_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                   for e in events[:10]]
        print("\n".join(f"{row['self_share']:6.1%}  {row['op']} ({row['calls']} calls)" for row in profile))
    report = {
        "command": " ".join(["benchmarks/bench_lora_dropout.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512_bf16", "amx_tile")}),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "compute_dtype": compute,
        "micro_batch": [args.batch, args.tokens], "answer_tokens": args.answer, "lora_layers": len(layers),
        "seconds": seconds, "median_seconds": median,
        "speedup": median["torch nn.Dropout"] / median["FastDropout"],
        "drop_rate_at_p_0.05": drop_rates,
        "profile_torch_dropout_step": profile,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "seconds"}, indent=2))


if __name__ == "__main__":
    main()
