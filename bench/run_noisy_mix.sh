#!/usr/bin/env bash
# The noisy-mix-v1 benchmark, one piece at a time (each piece well under 20 minutes on the shared
# 2-core AMX CPU, so other heavy jobs interleave), every piece under the shared heavy-job lock.
# Every stage is cached in OUT, and the evaluated (row, seed) cells are also read back from the
# committed bench/results/noisy-mix-v1/results.json (--reuse), so a piece computes only what
# no earlier piece has; `collect` copies the small result files into the repository.
#
#   bench/run_noisy_mix.sh PIECE [extra shedkit bench flags...]
#
#   calib N        random and clean-random, seeds 0..N-1 (the calibration: clean-random must
#                  beat random by > 2 sd on the Alpaca test loss)
#   rows R1,R2 N   the given rows (e.g. dsir,dsir-per-token,dq), seeds 0..N-1
#   tasks T [R N]  evaluate finished cells on test targets T as well (e.g. arc_easy,gsm8k): rows R
#                  (default random,clean-random), seeds 0..N-1 (default 3)
#   transfer R N   rows R with the full-fine-tuning recipe (transferability claim)
#   collect        report every evaluated cell of the whole table (--cached-only: computes nothing,
#                  lists the missing cells) and copy results.json/.md/*.png into bench/results/noisy-mix-v1/;
#                  cells computed in another output folder (a second lane: OUT=... LOCK=...) join with
#                  --reuse OTHER_OUT/results.json --reuse OTHER_OUT/cells.json
#   (any piece takes --first-seed K: seeds K..N-1 only, so two lanes split one row's seeds)
#
# Recipe (measured 2026-11-29 on an Intel Xeon with AMX, 2 cores shared by 7 sessions, load
# average 5-7; bench/results/noisy-mix-v1/README.md has the figures): LoRA r=16, batch 8,
# max_length 256, bf16 autocast (auto), 1 torch thread (2 threads were 5x slower under this
# load). The first calibration recipe (half an epoch, lr 5e-4: 19 steps, ~3.5 min per subset
# including the 300-row Alpaca test evaluation, load 2-3) did not separate clean-random from
# random; this one is stronger: 1 epoch (38 steps), lr 1e-3.
# SHED (when run): 10 clusters, 2 permutations, k=2, 50 dev rows, proxies 0.5 epoch: about 10
# proxy fine-tunes of <= 10 rows plus a 50-row dev evaluation each (~6 min here); SHED's default
# (sqrt(3000) = 55 clusters, 10 permutations, k=1) is ~550 proxy fine-tunes, ~12 h on this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/work/bench-out/noisy-mix-v1}
SUITE=${SUITE:-/work/shared/bench/noisy-mix-v1}
RESULTS=bench/results/noisy-mix-v1
SHEDKIT=${SHEDKIT:-.venv/bin/shedkit}
LOCK=${LOCK:-/tmp/shedkit-heavy.lock}
export OMP_NUM_THREADS=1
RECIPE=(--budget 0.1 --epochs 1 --max-length 256 --lr 1e-3 --threads 1 --no-progress
        --shed-clusters 10 --shed-permutations 2 --shed-removal-k 2 --shed-dev-limit 50 --shed-epochs 0.5
        --lobass-ref-epochs 1 --full-epochs 0.5)
REUSE=()
[[ -f $RESULTS/results.json ]] && REUSE=(--reuse "$RESULTS/results.json")

bench() {
  echo "[$(date -u +%H:%M:%S)] waiting for $LOCK; $(uptime)"
  flock "$LOCK" bash -c 'echo "[$(date -u +%H:%M:%S)] lock held; $(uptime)"; "$@"; echo "[$(date -u +%H:%M:%S)] done; $(uptime)"' _ \
    "$SHEDKIT" bench --suite "$SUITE" --out "$OUT" "${RECIPE[@]}" "${REUSE[@]}" "$@"
}

piece=${1:?usage: $0 calib N | rows R N | tasks T | transfer R N | collect}
shift
case $piece in
  calib) n=${1:?seeds}; shift; bench --methods random,clean-random --seeds "$n" --tasks alpaca "$@" ;;
  rows) rows=${1:?rows}; n=${2:?seeds}; shift 2; bench --methods "$rows" --seeds "$n" --tasks alpaca "$@" ;;
  tasks) t=${1:?tasks}; rows=${2:-random,clean-random}; n=${3:-3}; shift $(( $# < 3 ? $# : 3 ))
         bench --methods "$rows" --seeds "$n" --tasks "$t" "$@" ;;
  transfer) rows=${1:?rows}; n=${2:?seeds}; shift 2; bench --methods "$rows" --seeds "$n" --tasks alpaca --train-method full "$@" ;;
  collect)
    # every evaluated cell, on every test target it has (a cell evaluated on some targets only is
    # reported with those; the rest are listed as missing); extra --reuse files merge other lanes' cells
    "$SHEDKIT" bench --suite "$SUITE" --out "$OUT" "${RECIPE[@]}" "${REUSE[@]}" --cached-only --seeds 3 \
      --tasks alpaca,arc_easy,gsm8k "$@"
    mkdir -p "$RESULTS"
    for f in results.json results.md results.png compute_vs_quality.png; do cp "$OUT/$f" "$RESULTS/$f"; done
    echo "copied into $RESULTS" ;;
  *) echo "unknown piece $piece" >&2; exit 2 ;;
esac
