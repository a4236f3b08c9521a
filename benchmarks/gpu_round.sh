#!/usr/bin/env bash
# The GPU measurements issue 16 asks for, prepared to run in one window of about 15 minutes on one GPU (made for
# an H200). Every figure lands under $OUT (default ./gpu-round), with the device, the software and the command.
#
#   bash benchmarks/gpu_round.sh          # everything (at most 14 minutes: the parts' time limits)
#   bash benchmarks/gpu_round.sh steps    # part 1: train_step, 16 families, chexops vs the plain loop (<= 7.5 min)
#   bash benchmarks/gpu_round.sh grid     # parts 2 and 3: chexops plan on the paper profile, packing (<= 6.5 min)
#   bash benchmarks/gpu_round.sh window   # all three in one command of at most 8.5 min, with fewer steps: for a
#                                         # session whose whole device time (start-up included) is ~14 minutes
# On the first H200 window (benchmarks/results/h200-2026-12-04.md) each family cost ~14-20 s whatever the step
# count (model build, cuDNN autotuning), so `window` reached 8 of 16 families per part: a full round needs
# `steps` and `grid` in two windows, not one.
#
# Each of `steps` and `grid` fits in one 10-minute command; run them one after the other in one device window.
#
# Needs only torch, timm, numpy, pluggy, pyyaml and click (no mlflow, dvc, optuna or pandas): run from the
# repository root; chexops is imported from the checkout. Each part has its own time limit, so one slow part
# cannot take the others' time; a part that runs out leaves what it printed so far.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-round}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} CHEXOPS_LOAD_PLUGINS= HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PART=${1:-all}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__)"
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/device.txt" 2>&1

step() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$OUT/commands.txt"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name exit $? after $((SECONDS - start)) s" | tee -a "$OUT/commands.txt"
  tail -n 25 "$OUT/$name.txt"
}

if [[ $PART == window ]]; then
  # The same measurements, ordered so the figures the issues ask for first come first, and cut to fit one command.
  step train_step_eager 170 python benchmarks/train_step.py --family all --size 320 --batch 16 --steps 20 --warmup 6 \
    --compile off --json "$OUT/train_step_eager.json"
  step plan_paper 180 python -m chexops plan --params pipelines/profiles/paper.yaml --images 191027,202,518 \
    --steps 12 --warmup 4 --pack 3 --save "$OUT/plan_paper_profile.json"
  python -m chexops plan --params pipelines/profiles/paper.yaml --images 191027,202,518 \
    --profile "$OUT/plan_paper_profile.json" --json > "$OUT/plan_paper.json" 2>&1 || true
  step train_step_compiled 110 python benchmarks/train_step.py --family densenet121,resnet18 --size 320 --batch 16 \
    --steps 15 --warmup 4 --compile off,compile,cudagraphs --json "$OUT/train_step_compiled.json"
  step packing_streams 50 python benchmarks/packing.py --streams --device cuda --size 320 --batch 16 \
    --examples 640 --configs densenet121:0,resnet18:0,mobilenetv2:0 --json "$OUT/packing_streams.json"
fi

if [[ $PART == all || $PART == steps ]]; then
  # 1. chexops' step (eager bf16 + channels_last, side-stream copies, no host sync) vs the plain fp32 eager loop,
  #    all 16 families at 320 px, batch 16, ratios from one run.
  step train_step_eager 240 python benchmarks/train_step.py --family all --size 320 --batch 16 --steps 30 --warmup 8 \
    --compile off --json "$OUT/train_step_eager.json"
  # torch.compile and CUDA graphs on the issue's slowest and fastest families (compiling takes ~1 min per model):
  # what a `train.compile: auto` choice per family (chexops/train/compile.py MEASURED_CHOICES) would rest on.
  step train_step_compiled 200 python benchmarks/train_step.py --family densenet121,resnet18 --size 320 --batch 16 \
    --steps 20 --warmup 5 --compile off,compile,cudagraphs --json "$OUT/train_step_compiled.json"
fi

if [[ $PART == all || $PART == grid ]]; then
  # 2. The paper's grid (16 families x {imagenet, random} + 18 truncations, 3 epochs, 320 px, batch 16) measured
  #    here, with 3 workers per device for the packed figure. Image counts: CheXpert-v1.0's frontal images,
  #    approximately (train 191,027; valid 202; test 518, the 500 test studies' frontal views); the estimate
  #    scales with them.
  step plan_paper 300 python -m chexops plan --params pipelines/profiles/paper.yaml --images 191027,202,518 \
    --steps 20 --warmup 5 --pack 3 --save "$OUT/plan_paper_profile.json"
  python -m chexops plan --params pipelines/profiles/paper.yaml --images 191027,202,518 \
    --profile "$OUT/plan_paper_profile.json" --json > "$OUT/plan_paper.json" 2>&1 || true
  # 3. Several models in one process on CUDA streams vs one after another (the other way to pack).
  step packing_streams 90 python benchmarks/packing.py --streams --device cuda --size 320 --batch 16 \
    --examples 960 --configs densenet121:0,resnet18:0,mobilenetv2:0 --json "$OUT/packing_streams.json"
fi
echo "results in $OUT"
