#!/usr/bin/env bash
# Every GPU figure the issues ask for, on one CUDA machine (H200, 2026-11-27: steps 1-2 took
# 2 minutes; steps 3-4 with TRAIN_SECONDS=350 took 9), and the GPU forms' tests:
#   0. the tests a CPU machine skips: the Triton rasterizer and edge anti-aliasing search
#      against numba, the device stream (pytest; CHECKS=0, or 013 with steps 1 and 3)
#   1. renderer: batched torch path, 128 and 256 px, batch 512      (bench_render.py)
#   2. online synthesis: render only / model only / end to end       (bench_online.py)
#   3. dataset writer: a 100k-image slice of SYN-1M to disk          (morphgen render --device cuda),
#      then 100k and 200k slices for the steady rate                 (bench_dataset.py --scales 1,2)
#   4. the online recipe (RECIPE, default experiments/online_gpu_10min.yaml; the transfer one:
#      experiments/transfer_gpu_10min.yaml) for TRAIN_SECONDS of training, then its evaluations
#      (held-out synthetic, ORL and Yale pairs, CFP-FF/FP when ../shared/data/cfp is there) and table
#
#   OUT=results bash benchmarks/gpu_checks.sh
#
# Environment:
#   OUT            where logs and results go (default ./gpu_checks_out)
#   CHECKS         which of the steps to run (default 1234; 0 runs the GPU tests). CHECKS=12, then CHECKS=34
#                  RATE=<step 2's end-to-end img/s> TRAIN_SECONDS=350 on the same warm
#                  machine, fits a 15-minute device session.
#   TRAIN_SECONDS  step 4's training time (default 90); the step count is derived from the
#                  end-to-end rate of step 2 (or RATE, or else 2,000 img/s)
#   RATE           step 4's end-to-end img/s when step 2 ran in another call
#   RECIPE         step 4's experiment (default experiments/online_gpu_10min.yaml)
#   WORKERS        CPU processes (default cores - 1)
#   RASTERS        step 1's rasterizers (default "torch triton")
#   PROFILE        step 2 then profiles that many end-to-end steps (default 0)
#   DEVICE, TORCH_BATCH, P, IDS, BENCH_STEPS (cuda, 512, 128, 1000, 40) shrink it for a trial
#                  on a CPU: DEVICE=cpu TORCH_BATCH=8 P=8 IDS=10 BENCH_STEPS=2
#                  TRAIN_SECONDS=10 RASTERS=torch
# Needs morphgen installed with its dependencies (python3 and morphgen on the PATH; deflate is the
# one a GPU machine's torch image may lack), facenet-pytorch for MTCNN and
# ../shared/data (ORL, Yale) beside the repo for the real-face pairs. Each step has its own
# time limit, and a failing step does not stop the others.
set -u
OUT=${OUT:-gpu_checks_out}
CHECKS=${CHECKS:-1234}
TRAIN_SECONDS=${TRAIN_SECONDS:-90}
WORKERS=${WORKERS:-$(( $(nproc) - 1 ))}
DEVICE=${DEVICE:-cuda}
TORCH_BATCH=${TORCH_BATCH:-512}
P=${P:-128}
IDS=${IDS:-1000}
BENCH_STEPS=${BENCH_STEPS:-40}
RASTERS=${RASTERS:-torch triton}
PROFILE=${PROFILE:-0}
RECIPE=${RECIPE:-experiments/online_gpu_10min.yaml}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
say() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
want() { [[ "$CHECKS" == *"$1"* ]]; }
step() { local limit=$1; shift; timeout "$limit" "$@" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tee -a "$LOG"; say "exit ${PIPESTATUS[0]}"; }

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch, numpy, numba, cv2; print('torch', torch.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__, 'opencv', cv2.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"
python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tee -a "$LOG"

if want 0; then
say "0. GPU tests (Triton rasterizer and edge anti-aliasing against numba, device paths)"
step 300 python3 -m pytest -q -p no:cacheprovider tests/test_triton_backend.py tests/test_edge_aa.py tests/test_render.py \
    tests/test_online.py -k "triton or cuda or device or edge"
fi

if want 1; then
say "1. renderer (torch path on the GPU, batch 512)"
step 120 python3 benchmarks/bench_render.py --only-torch --torch-device "$DEVICE" --torch-batch "$TORCH_BATCH" --seconds 1 --sizes 128 256 --rasters $RASTERS
fi

if want 2; then
say "2. online synthesis throughput (IResNet-18, 128 x 4)"
step $(( 90 + 5 * PROFILE )) python3 benchmarks/bench_online.py --device "$DEVICE" --config experiments/online_scene.yaml --arch iresnet18 \
    --batch-p "$P" --batch-k 4 --steps "$BENCH_STEPS" --warmup $(( BENCH_STEPS / 5 + 1 )) --workers "$WORKERS" --profile "$PROFILE" | tee "$OUT/bench_online.txt"
fi

if want 3; then
say "3. dataset writer: 1,000 identities x 100 images, 128 px PNG, to local disk"
rm -rf /tmp/syn100k
step 75 morphgen render --ids "$IDS" --per-id 100 --device "$DEVICE" --workers "$WORKERS" --out /tmp/syn100k
du -sh /tmp/syn100k 2>&1 | tee -a "$LOG"
find /tmp/syn100k/images -name '*.png' | wc -l | tee -a "$LOG"
rm -rf /tmp/syn100k
say "3b. the same slice and a 200k one (bench_dataset.py): their difference is the steady rate a SYN-1M run sees"
step 200 python3 benchmarks/bench_dataset.py --device "$DEVICE" --ids "$IDS" --per-id 100 --workers "$WORKERS" --scales 1,2 --dir /tmp
fi

if want 4; then
say "4. online recipe $RECIPE, about $TRAIN_SECONDS s of training"
RATE=${RATE:-$(grep -o 'end to end *: *[0-9.]*' "$OUT/bench_online.txt" 2>/dev/null | grep -o '[0-9.]*$')}
STEPS=$(python3 -c "print(max(20, int(float('${RATE:-2000}') * $TRAIN_SECONDS / ($P * 4))))")
say "end-to-end rate ${RATE:-unknown} img/s -> $STEPS steps"
sed -e "s/^    steps: .*/    steps: $STEPS/" -e "s/^    eval_every: .*/    eval_every: 0/" \
    -e "s/^    warmup_steps: .*/    warmup_steps: $(( STEPS / 20 ))/" -e "s/^    device: .*/    device: $DEVICE/" \
    -e "s/^    margin_warmup_steps: .*/    margin_warmup_steps: $(( STEPS / 5 ))/" \
    -e "s/^    batch_p: .*/    batch_p: $P/" \
    "$RECIPE" > experiments/online_gpu_short.yaml
step $(( TRAIN_SECONDS + 300 )) morphgen experiment run experiments/online_gpu_short.yaml --out /tmp/online_gpu
RUN=/tmp/online_gpu/runs/none__online
cp /tmp/online_gpu/results.md "$RUN/log.csv" "$RUN/train_crops.png" "$RUN/real_crops.png" "$OUT/" 2>>"$LOG"
cp /tmp/online_gpu/roc_*.png "$OUT/" 2>>"$LOG"
cat /tmp/online_gpu/results.md 2>&1 | tee -a "$LOG"
rm -f experiments/online_gpu_short.yaml
fi
say "done"
