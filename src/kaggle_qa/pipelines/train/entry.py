"""The recipe's entry module for one rank under torchrun (`launch.run_distributed` starts it).

    python -m torch.distributed.run --standalone --nproc_per_node N -m kaggle_qa.pipelines.train.entry JOB_DIR

JOB_DIR/inputs.json holds what the train node got from the catalog (examples, base model,
parameters). Rank 0 writes the kept adapter and the run's metrics to JOB_DIR/adapter.partial and
renames it to JOB_DIR/adapter only when everything is written: a run that dies leaves no adapter."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

ADAPTER_DIR, PARTIAL_DIR, INPUTS, METRICS = "adapter", "adapter.partial", "inputs.json", "train_result.json"


def main(argv: list[str]) -> int:
    job = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s")
    (job / f"rank{rank}.pid").write_text(str(os.getpid()))

    from kaggle_qa.pipelines.train.config import TrainConfig
    from kaggle_qa.pipelines.train.distributed import Comm
    from kaggle_qa.pipelines.train.recipe import LoRAFinetuneRecipe

    inputs = json.loads((job / INPUTS).read_text())
    config = TrainConfig.from_dict(inputs["params"])
    comm = Comm.from_env(config.distributed.backend, config.distributed.timeout_s)
    recipe = LoRAFinetuneRecipe(inputs["base_model"], config, inputs["train_examples"],
                                inputs["validation_examples"], comm)
    recipe.setup()
    result = recipe.train()
    sharded = recipe._lora_state() if recipe.fsdp else None  # FSDP: gathered from every rank (a collective)
    if comm.is_main:
        partial = job / PARTIAL_DIR
        result.model.save_pretrained(partial, **({"state_dict": sharded} if sharded is not None else {}))
        (partial / METRICS).write_text(json.dumps(
            {"metrics": result.metrics, "history": result.history, "compute_dtype": recipe.compute_dtype}, default=str))
        partial.rename(job / ADAPTER_DIR)
        recipe.cleanup()
    comm.barrier()
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
