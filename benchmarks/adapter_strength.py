"""Answer loss of an adapter at several strengths (the share of its weight change kept,
``kaggle_qa.pipelines.train.strength``) and softmax temperatures, on other teachers' answers
(qa_cross_teacher, the sample evaluate scores) and on our own test answers (qa_v2), gold context.

This is the measurement behind the adapter strength (docs/train.md, "Adapter strength"):

    .venv/bin/python benchmarks/adapter_strength.py --adapter data/06_models/adapter/<version>/adapter \
        --rows 60 --out benchmarks/results/adapter_strength/<name>.json

It scales the LoRA layers of the unmerged adapter in place (strength 0 is the base model) and
rescales the logits (temperature 1 is the model as it is); float32 on CPU, 2 threads. It also
counts the reference tokens the model all but rules out (loss above 8) and their share of the loss.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TEMPERATURES = (1.0, 1.25, 1.5, 2.0)
TAIL = 8.0  # a token loss above this: probability below e^-8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--env", default=None)
    parser.add_argument("--rows", type=int, default=60, help="first N rows of each evaluated sample")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from peft import PeftModel

    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
    from kaggle_qa import modeling
    from kaggle_qa.pipelines.evaluate.nodes import prepare_test_set
    from kaggle_qa.pipelines.train.strength import StrengthSetter
    from kaggle_qa.prompting import tokenize_example

    evaluate = params["evaluate"]
    shared = {key: value for key, value in evaluate.items() if key != "cross_teacher"}
    sets = {
        "other_teachers": prepare_test_set(catalog.load("qa_cross_teacher"), {**shared, **evaluate["cross_teacher"]},
                                           args.adapter)[: args.rows],
        "our_test_set": prepare_test_set(catalog.load("qa_v2"), evaluate, args.adapter)[: args.rows],
    }
    base_model = catalog.load("base_model")
    tokenizer = modeling.load_tokenizer(base_model)
    torch.set_num_threads(2)
    model = PeftModel.from_pretrained(modeling.load_model(base_model, dtype="float32"), args.adapter).eval()
    setter = StrengthSetter(model)
    table = []
    for strength in STRENGTHS:
        setter.set(strength)
        for name, rows in sets.items():
            sums, count, tail_tokens, tail_loss = dict.fromkeys(TEMPERATURES, 0.0), 0, 0, 0.0
            with torch.inference_mode():
                for row in rows:
                    example = tokenize_example(tokenizer, row["input"], row["instruction"], row["output"], 512)
                    ids = torch.tensor([example.input_ids])
                    logits = model(input_ids=ids).logits[0, example.prompt_length - 1 : -1].float()
                    targets = ids[0, example.prompt_length :]
                    for temperature in TEMPERATURES:
                        token_loss = -torch.log_softmax(logits / temperature, -1).gather(-1, targets[:, None])[:, 0]
                        sums[temperature] += token_loss.sum().item()
                        if temperature == 1.0:  # tokens the model all but rules out (p < e^-8)
                            tail_tokens += int((token_loss > TAIL).sum())
                            tail_loss += token_loss[token_loss > TAIL].sum().item()
                    count += len(targets)
            table.append({"strength": strength, "set": name, "rows": len(rows), "tokens": count,
                          "loss_by_temperature": {str(t): round(total / count, 4) for t, total in sums.items()},
                          f"share_of_tokens_above_{TAIL:g}": round(tail_tokens / count, 4),
                          f"share_of_loss_from_them": round(tail_loss / sums[1.0], 4) if sums[1.0] else None})
            print(strength, name, table[-1]["loss_by_temperature"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"adapter": args.adapter, "adapter_config": json.loads(
        (Path(args.adapter) / "adapter_config.json").read_text()), "table": table}, indent=1))


if __name__ == "__main__":
    main()
