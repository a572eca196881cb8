#!/usr/bin/env bash
# The noisy-mix-v1 benchmark (DESIGN "Benchmark protocol") on the shared 2-core CPU, sized to
# finish in about 40 minutes when the machine is shared with other jobs (measured 2026-11-21:
# a LoRA step at batch 8 x 256 tokens took ~50 s fp32 with 1 torch thread, 145 s with 2 threads,
# under a load average of 5-7; this CPU has no fast bf16). Hence: 1 seed (3 for random, the
# baseline whose spread matters most); fine-tunes on 10% of
# each 300-row subset (~30 rows, 4 LoRA steps) and the full pool on 1% of an epoch (the same
# ~30 rows' worth of steps); 20 rows per test target; SHED with 6 clusters, 1 permutation,
# k=2, 20 dev rows; LoBaSS left out (two forward passes over the 3,000-row pool alone take
# over an hour at this speed). Every stage is cached in OUT: rerun with more --seeds or
# another method to add to it.
#
#   bench/run_noisy_mix.sh [OUT] [extra shedkit bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/shedkit-bench/noisy-mix-v1}
shift || true
SUITE=${SUITE:-../shared/bench/noisy-mix-v1}
exec .venv/bin/shedkit bench --suite "$SUITE" --out "$OUT" \
  --methods random,dsir,dq,shed-qocs,shed-qwcs,full --budget 0.1 --seeds 1 --method-seeds random=3 --model smollm2-135m \
  --quick --epochs 0.1 --full-epochs 0.01 --limit-test 20 \
  --shed-clusters 6 --shed-permutations 1 --shed-removal-k 2 --shed-dev-limit 20 \
  --threads 1 --no-progress "$@"
