#!/usr/bin/env bash
# A/B of the in-capture warm-up on the H100: the same capture (4 pages x 3 repeats x 16 tokens, gundam,
# one unprofiled run after) with --capture-warmup 0, 1, then 0 again, back to back on one machine.
# Brings back the timing files (profiled and unprofiled CUDA-event times per stage, repeat and page).
# Usage (repo root, on the GPU machine): bash benchmarks/gpu/warmup_ab.sh
set -uo pipefail
source benchmarks/gpu/h100_env.sh
P=src/dsocr/data/pages
pages=(--pages $P/text-01-article.png --pages $P/mixed-02-table.png --pages $P/image-03-charts.png --pages $P/text-02-dense.png)
i=0
for cw in 0 1 0 1; do
  i=$((i + 1))
  run=/tmp/ab/$i-cw$cw
  start=$(date +%s)
  python3 -m dsocr capture --mode gundam --repeats 3 --max-new-tokens 16 --capture-warmup $cw --baseline-runs 1 \
    --no-calibrate --no-analyze --quiet --out "$run" "${pages[@]}"
  echo "run $i capture-warmup $cw: rc=$? in $(( $(date +%s) - start )) s"
  mkdir -p "$OUT/ab"
  tar -C "$run" -czf "$OUT/ab/$i-cw$cw.tgz" timing.json timing-baseline.json manifest.json
done
