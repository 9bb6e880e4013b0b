"""Per-step training time over a run, by batch-width rounding (`train.pad_to_multiple_of`).

On CPU a batch shape PyTorch/oneDNN has not seen gets new kernels and buffers. Batches padded to
their longest example give one shape per length: the steps of a run get slower and its memory
grows. This runs the real train recipe on the real embedded model and `qa_v3` for `--steps` steps
per multiple (no validation, no budget) and records seconds per step and RSS per 10-step window.

    .venv/bin/python benchmarks/bench_padding.py --multiples 1 32 --steps 40 --repeats 3

Output: data/08_reporting/bench_padding.json. Each run is a fresh process; with `--repeats` the
settings alternate (round 1 in the order given, round 2 reversed, ...) and the median total time
per setting and the ratio to the first setting are reported, beside every run's per-window trend
(the effect grows with the run's length).
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "src"))

from kaggle_qa.pipelines.train.nodes import build_examples, merge_params, split_training_data  # noqa: E402
from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe  # noqa: E402


def run(multiple: int, steps: int, base_model: str, rows: list[dict]) -> dict:
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_train.yml").read_text())["train"]
    params = merge_params(params, {"time_budget_s": None, "max_steps": steps, "eval_every_steps": 10**6,
                                   "checkpoint_dir": "/tmp/bench_padding_ckpt", "checkpoint_every_steps": 10**6,
                                   "train_fit_examples": 0, "pad_to_multiple_of": multiple})
    train, validation, _, _ = split_training_data(rows, params)
    train_examples, validation_examples, _ = build_examples(train, validation[:8], base_model, params)
    recipe = LoRAFinetuneRecipe(base_model, params, train_examples, validation_examples)
    recipe.setup()
    marks, rss = [], []
    step = recipe.optimizer.step

    def timed_step(*args, **kwargs):
        out = step(*args, **kwargs)
        marks.append(time.perf_counter())
        rss.append(int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**30)
        return out

    recipe.optimizer.step = timed_step
    recipe.train()
    recipe.cleanup()
    seconds = [b - a for a, b in zip(marks, marks[1:])]
    windows = range(0, len(seconds), 10)
    return {
        "pad_to_multiple_of": multiple, "steps": steps,
        "seconds_per_step_by_10": [round(sorted(seconds[i : i + 10])[len(seconds[i : i + 10]) // 2], 2) for i in windows],
        "rss_gib_by_10": [round(rss[i], 2) for i in windows],
        "total_s": round(sum(seconds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of runs, alternating the order")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "data/08_reporting/bench_padding.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one multiple, this process
    args = parser.parse_args()
    base_model = str(PROJECT_ROOT / "data/06_models/base_model")
    rows = json.loads(Path(sorted(glob.glob(str(PROJECT_ROOT / "data/03_primary/qa_v3.json/*/qa_v3.json")))[-1]).read_text())
    if args.one is not None:
        print("RESULT " + json.dumps(run(args.one, args.steps, base_model, rows)))
        return
    # each multiple in a fresh process: kernels and memory a run leaves behind would slow the next
    # one (seen in one process: the second run started at 8.6 GiB and 5.5 s per step)
    runs = []
    for round_ in range(args.repeats):
        for multiple in args.multiples if round_ % 2 == 0 else args.multiples[::-1]:
            out = subprocess.run([sys.executable, __file__, "--one", str(multiple), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
            print(runs[-1], flush=True)
    totals = {m: [r["total_s"] for r in runs if r["pad_to_multiple_of"] == m] for m in args.multiples}
    medians = {m: statistics.median(t) for m, t in totals.items()}
    summary = {
        str(m): {"total_s": totals[m], "median_total_s": medians[m], "ratio_to_first": round(medians[m] / medians[args.multiples[0]], 3)}
        for m in args.multiples
    }
    for m, row in summary.items():
        print(f"pad_to_multiple_of {m}: median {row['median_total_s']} s over {args.steps} steps {row['total_s']}, ratio {row['ratio_to_first']}")
    Path(args.output).write_text(json.dumps({"steps": args.steps, "repeats": args.repeats, "summary": summary, "runs": runs}, indent=2))

if __name__ == "__main__":
    main()
