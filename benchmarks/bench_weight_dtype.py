"""LoRA training steps (forward + backward, 4 x 170 tokens, answer loss on 30 tokens per row) of the
real Gemma 3 270M, by weight dtype and autocast: bf16 weights + bf16 autocast, fp32 weights, fp32
weights + bf16 autocast. It decides what `compute_dtype: auto` resolves to on a CPU.

    .venv/bin/python benchmarks/bench_weight_dtype.py --repeats 3 --steps 3

Each round times `--steps` steps of every setting, the order alternating between rounds (round 1
as listed, round 2 reversed, ...); the median seconds per step of each setting over its rounds and
the ratio to fp32 weights are printed, with the CPU's bf16 features. LoRA rank and targets come
from conf/base/parameters_train.yml. Results: data/08_reporting/bench_weight_dtype.json (one
entry per CPU model name, so runs on different machines are kept side by side).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SETTINGS = [("bf16 weights + autocast", "bfloat16", True), ("fp32 weights", "float32", False),
            ("fp32 weights + autocast", "float32", True)]


def cpu_facts() -> dict:
    flags = set()
    name = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
    return {"model_name": name, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "avx2": "avx2" in flags, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="rounds, alternating the order of the settings")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting and round (after one warm-up)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from kaggle_qa.modeling import EMBEDDED_GEMMA, load_model, resolve_model_path
    from kaggle_qa.pipelines.train.recipe import answer_loss_sum

    lora = yaml.safe_load((ROOT / "conf/base/parameters_train.yml").read_text())["train"]["lora"]
    path = resolve_model_path(EMBEDDED_GEMMA, ROOT / "data/06_models/base_model")
    ids = torch.randint(10, 20000, (4, 170), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :140] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    models = {}
    for name, dtype, _ in SETTINGS:
        models[name] = get_peft_model(
            load_model(path, dtype=dtype),
            LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"], task_type="CAUSAL_LM"),
        )
        models[name].train()

    def step(name: str, autocast: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, count = answer_loss_sum(models[name].get_base_model(), batch, 1024)
        (loss / count).backward()
        models[name].zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for name, _, autocast in SETTINGS:  # warm-up: first-shape kernels and allocations
        step(name, autocast)
    per_step: dict[str, list[float]] = {name: [] for name, _, _ in SETTINGS}
    for round_ in range(args.repeats):
        for name, _, autocast in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            per_step[name].append(statistics.median(step(name, autocast) for _ in range(args.steps)))
            print(f"round {round_ + 1}: {name}: {per_step[name][-1]:.2f} s/step", flush=True)
    fp32 = statistics.median(per_step["fp32 weights"])
    results = {
        name: {"seconds_per_step": [round(t, 3) for t in times], "median": round(statistics.median(times), 3),
               "speed_vs_fp32_weights": round(fp32 / statistics.median(times), 2)}
        for name, times in per_step.items()
    }
    facts = cpu_facts()
    for name, row in results.items():
        print(f"{name}: median {row['median']} s/step, {row['speed_vs_fp32_weights']}x the speed of fp32 weights")
    out = ROOT / "data/08_reporting/bench_weight_dtype.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous = previous if isinstance(previous, dict) and all(isinstance(v, dict) and "cpu" in v for v in previous.values()) else {}
    previous[facts["model_name"]] = {"cpu": facts, "lora": lora, "repeats": args.repeats, "steps": args.steps, "results": results}
    out.write_text(json.dumps(previous, indent=2))


if __name__ == "__main__":
    main()
