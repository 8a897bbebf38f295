#!/usr/bin/env bash
# The GPU checks of minigen, in one command for a machine with a CUDA GPU, CuPy and (for the ratios) PyTorch:
#   1. the @gpu tests (every CuPy kernel against its NumPy reference, the engine on CUDA);
#   2. `minigen bench --suite all --device cuda`: kernels, fused diffusion steps and one U-Net training step
#      at batch 128, each against PyTorch CUDA;
#   3. a DDPM trained on MNIST on the GPU for TRAIN_SECONDS, scored by a classifier trained there too
#      (Fréchet distance of 10,000 DDIM-50 samples, the variational bound in bits/dim, its sample figures).
# Usage: tools/gpu-check.sh OUT MNIST_DIR [TRAIN_SECONDS] [STAGES]
#   STAGES: any of tests,bench,profile,ddpm,diag (default: the first four; profile = the U-Net step op by op,
#   launch and kernel time; diag = tools/gpu_diag.py: host or device time, the convolutions alone against
#   cuDNN). Everything is written under OUT.
# Each stage has its own time limit and runs even when an earlier one fails.
set -u
OUT=${1:?OUT folder}
DATA=${2:?folder holding the MNIST files}
SECS=${3:-240}
STAGES=${4:-tests,bench,profile,ddpm}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# without an install, the top-level kernels/ folder is the package minigen.kernels (see setup.py)
[ -e minigen/kernels ] || ln -s ../kernels minigen/kernels
LOG=$OUT/gpu-check.log
step() { echo; echo "=== $* ($(date -u +%T))" | tee -a "$LOG"; }

step environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import numpy, numba, cupy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import minigen as mg; print('minigen sees cuda:', mg.cuda_available())"; } 2>&1 | tee -a "$LOG"

# Phase 1, at once: the tests, the judge (classifier) and the DDPM train side by side (the GPU is large; the
# tests check values, not time). Phase 2: the bench alone on the GPU. Phase 3: sampling and scoring.
R=runs-gpu
if [[ $STAGES == *tests* ]]; then
  step "pytest -m gpu (background)"
  timeout 200 python3 -m pytest -m gpu -q --tb=short -p no:cacheprovider -o addopts="" --durations=8 tests \
    > "$OUT/gpu-tests.log" 2>&1 &
  TESTS=$!
fi
if [[ $STAGES == *ddpm* ]]; then
  step "classifier (the judge) and DDPM on MNIST, $SECS s, on the GPU (background)"
  ( timeout 150 python3 -m minigen.cli train classifier --data mnist --data-dir "$DATA" --epochs 2 --batch-size 64 \
      --lr 2e-3 --schedule cosine --name mnist-classifier --runs-dir $R --device cuda --no-progress
    echo "classifier exit $?"
    timeout 60 python3 -m minigen.cli eval $R/mnist-classifier --device cuda --no-progress | tail -8 ) \
    > "$OUT/train.log" 2>&1 &
  CLS=$!
  # the end of the run draws its figures: a grid and the denoising strip, one run of Algorithm 2 (T = 1000)
  ( timeout $((SECS + 180)) python3 -m minigen.cli train ddpm --data-dir "$DATA" --channels 64 --blocks 1 --dropout 0 \
      --batch-size 128 --lr 5e-4 --schedule cosine --ema 0.995 --steps $((SECS * 11)) --time-limit "$SECS" \
      --checkpoint-every 5000 --log-every 100 --name ddpm-mnist-gpu --runs-dir $R --device cuda --no-progress
    echo "ddpm exit $?" ) > "$OUT/ddpm-train.log" 2>&1 &
  DDPM=$!
fi
[[ -n ${TESTS:-} ]] && { wait $TESTS; step "gpu tests"; tail -45 "$OUT/gpu-tests.log" | tee -a "$LOG"; }
[[ -n ${CLS:-} ]] && { wait $CLS; wait $DDPM; step "training"; { tail -12 "$OUT/train.log"; tail -4 "$OUT/ddpm-train.log"; } | tee -a "$LOG"; }

if [[ $STAGES == *bench* ]]; then
  step "minigen bench --suite all --device cuda"
  timeout 120 python3 -m minigen.cli bench --suite all --device cuda --out "$OUT/bench" 2>&1 | tee -a "$LOG"
fi

if [[ $STAGES == *ddpm* ]]; then
  step "Frechet distance of 10,000 DDIM-50 samples; the one-term bound over the whole test set"
  timeout 180 python3 -m minigen.cli eval $R/ddpm-mnist-gpu --device cuda --sampler ddim --steps 50 --samples 10000 \
    --classifier $R/mnist-classifier --no-progress 2>&1 | tail -24 | tee -a "$LOG"
  timeout 30 python3 -m minigen.cli eval $R/ddpm-mnist-gpu --device cuda --samples 0 --bound --bound-terms sampled \
    --output bound.json --no-progress 2>&1 | tail -8 | tee -a "$LOG"
  cat "$OUT/ddpm-train.log" >> "$OUT/train.log"; rm -f "$OUT/ddpm-train.log"
  tar czf "$OUT/runs.tgz" --exclude='*.npz' $R 2>/dev/null
fi
if [[ $STAGES == *diag* ]]; then
  step "host or device: tools/gpu_diag.py"
  timeout 120 python3 tools/gpu_diag.py 2>&1 | tee -a "$LOG"
fi
if [[ $STAGES == *profile* ]]; then
  step "the U-Net step at batch 128 op by op: launch time, then kernel time"
  timeout 60 python3 -m minigen.cli bench --profile unet --device cuda --repeat 3 2>&1 | tee -a "$LOG"
  timeout 60 python3 -m minigen.cli bench --profile unet --device cuda --repeat 3 --sync 2>&1 | tee -a "$LOG"
fi
step done
