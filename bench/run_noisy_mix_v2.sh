#!/usr/bin/env bash
# The noisy-mix-v2 benchmark (issue 22), one piece at a time, every piece under a heavy-job lock
# (one lock per lane: two lanes use the two cores, one torch thread each).
# The suite is generated, not committed:  python bench/suites/make_noisy_mix_v2.py [OUT]
# The recipe is v1's, unchanged (bench/run_noisy_mix.sh: LoRA r=16, batch 8, max_length 256, 1 epoch,
# lr 1e-3, precision auto, recipe seed 0; SHED 10 clusters, 2 permutations, k=2, 50 dev rows, proxies
# 0.5 epoch; full pool 0.5 epoch). What v2 changes: SHED's and first-order's dev target is the mixed one
# (target_mixed_dev: 40 Alpaca + 30 LIMA + 30 GSM8K rows), and the claims are judged on the mixed test
# loss (meta.json "mixed_test": the equal-weight mean of the Alpaca, LIMA and GSM8K test losses).
# LIMA's long answers are cut at 256 tokens like every row (the recipe is not changed for them).
#
#   bench/run_noisy_mix_v2.sh rows R1,R2 N [flags]   rows R, seeds 0..N-1, on the mixed-target parts
#   bench/run_noisy_mix_v2.sh tasks T R N [flags]    evaluate finished cells on more targets (arc_easy)
#   bench/run_noisy_mix_v2.sh collect [flags]        report every evaluated cell (computes nothing) and copy
#                                                    results.json/.md/*.png into bench/results/noisy-mix-v2/
#   (second lane: OUT=/work/bench-out/noisy-mix-v2-b LOCK=/tmp/lane-b.lock ...; collect joins it with
#    --reuse /work/bench-out/noisy-mix-v2-b/cells.json)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/work/bench-out/noisy-mix-v2}
SUITE=${SUITE:-/work/bench-out/suites/noisy-mix-v2}
RESULTS=bench/results/noisy-mix-v2
SHEDKIT=${SHEDKIT:-.venv/bin/shedkit}
LOCK=${LOCK:-/tmp/shedkit-heavy.lock}
export OMP_NUM_THREADS=1
[[ -f $SUITE/pool.jsonl ]] || { echo "no suite at $SUITE: run python bench/suites/make_noisy_mix_v2.py $SUITE" >&2; exit 2; }
RECIPE=(--budget 0.1 --epochs 1 --max-length 256 --lr 1e-3 --threads 1 --no-progress
        --shed-clusters 10 --shed-permutations 2 --shed-removal-k 2 --shed-dev-limit 50 --shed-epochs 0.5
        --lobass-ref-epochs 1 --full-epochs 0.5 --shed-target mixed --limit-test 150)
MIXED_PARTS=alpaca,lima,gsm8k
REUSE=()
[[ -f $RESULTS/results.json ]] && REUSE=(--reuse "$RESULTS/results.json")

bench() {
  echo "[$(date -u +%H:%M:%S)] waiting for $LOCK; $(uptime)"
  flock "$LOCK" bash -c 'echo "[$(date -u +%H:%M:%S)] lock held; $(uptime)"; "$@"; echo "[$(date -u +%H:%M:%S)] done; $(uptime)"' _ \
    "$SHEDKIT" bench --suite "$SUITE" --out "$OUT" "${RECIPE[@]}" "${REUSE[@]}" "$@"
}

piece=${1:?usage: $0 rows R N | tasks T R N | collect}
shift
case $piece in
  rows) rows=${1:?rows}; n=${2:?seeds}; shift 2; bench --methods "$rows" --seeds "$n" --tasks "$MIXED_PARTS" "$@" ;;
  tasks) t=${1:?tasks}; rows=${2:?rows}; n=${3:?seeds}; shift 3; bench --methods "$rows" --seeds "$n" --tasks "$t" "$@" ;;
  collect)
    "$SHEDKIT" bench --suite "$SUITE" --out "$OUT" "${RECIPE[@]}" "${REUSE[@]}" --cached-only --seeds 3 \
      --tasks "$MIXED_PARTS,arc_easy" "$@"
    mkdir -p "$RESULTS"
    for f in results.json results.md results.png compute_vs_quality.png; do cp "$OUT/$f" "$RESULTS/$f"; done
    echo "copied into $RESULTS" ;;
  *) echo "unknown piece $piece" >&2; exit 2 ;;
esac
