#!/usr/bin/env bash
# The GPU captures recorded in docs/benchmarks.md, run on the H100 test machine from the repo root:
#   bash benchmarks/gpu/capture.sh sample|modules|main
# Each captures with `dsocr capture` (analysis happens back on the CPU machine), then packs the run
# directory's small files and the xz-compressed SQLite export (split into 15 MB parts) into $OUT.
set -uo pipefail
source benchmarks/gpu/h100_env.sh
variant=$1
P=src/dsocr/data/pages
case $variant in
  sample)  args=(--repeats 2 --max-new-tokens 16 --op-ranges --op-memory --module-ranges --pages $P/text-01-article.png --pages $P/mixed-02-table.png) ;;
  modules) args=(--repeats 1 --max-new-tokens 16 --module-ranges --pages $P/text-01-article.png --pages $P/mixed-02-table.png) ;;
  main)    args=(--repeats 3 --max-new-tokens 32) ;;
  *) echo "unknown variant $variant"; exit 2 ;;
esac
run=/tmp/runs/$variant
start=$(date +%s)
python3 -m dsocr capture --mode gundam --no-analyze --out "$run" "${args[@]}"
rc=$?
echo "capture $variant: rc=$rc in $(( $(date +%s) - start )) s (baselines, capture, export, calibration)"
mkdir -p "$OUT/$variant"
tar -C "$run" -czf "$OUT/$variant/run-small.tgz" --exclude=trace.sqlite --exclude=trace.nsys-rep .
xz -T0 -6 -c "$run/trace.sqlite" | split -b 15M -d - "$OUT/$variant/trace.sqlite.xz.part"
ls -la "$run" "$OUT/$variant"
