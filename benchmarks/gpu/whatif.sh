#!/usr/bin/env bash
# Issue 11 on one GPU in one call (< 10 min), from the repo root on the GPU machine (carry .device-kit/ and .whl/):
#   bash benchmarks/gpu/whatif.sh
# 1. `dsocr whatif run`: 4 pages x 2 repeats x 32 new tokens, one unprofiled run per variant; the baseline
#    (the vendor-like execution: MoE loop, eager attention, eager decode) and the graph variant also under nsys
#    (--cuda-graph-trace node, the default); variants grouped (moe=grouped), graph (moe=grouped, decode=graph),
#    compile (moe=grouped, decode=compile: torch.compile reduce-overhead, its compile time in timing.json).
# 2. The graph variant once more under nsys with --cuda-graph-trace graph (NVIDIA's cheaper mode), unprofiled
#    baseline included, for the profiler overhead of both modes.
# 3. The batch sweep 1..32 with graph decode, unprofiled, on 32 copies of one page (one crop grid, so one
#    forward holds the whole batch).
# Each part has its own timeout so that the packing always runs; $OUT gets pack.tar.partNN (15 MB parts) of
# every run directory's small files plus the xz'd SQLite exports. Analysis happens on the CPU machine
# (`dsocr analyze`, `dsocr whatif report`).
set -uo pipefail
source benchmarks/gpu/h100_env.sh
P=src/dsocr/data/pages
W=/tmp/w
mkdir -p "$W" "$OUT"
PAGES=(--pages $P/text-01-article.png --pages $P/mixed-02-table.png --pages $P/text-02-dense.png --pages $P/image-01-figures.png)
WORK=(--mode gundam --repeats 2 --max-new-tokens 32)
t0=$(date +%s)
timeout ${WHATIF_MAIN_S:-260} python3 -m dsocr whatif run --out $W/main "${PAGES[@]}" "${WORK[@]}" --nsys "$NSYS" \
  --no-analyze --variant grouped=moe=grouped --variant graph=moe=grouped,decode=graph \
  --variant compile=moe=grouped,decode=compile --profile baseline,graph > $W/main.log 2>&1
echo "whatif main: rc=$? at $(( $(date +%s) - t0 )) s"
timeout ${GRAPHTRACE_S:-70} python3 -m dsocr capture --out $W/graphtrace "${PAGES[@]}" "${WORK[@]}" --nsys "$NSYS" \
  --moe grouped --decode graph --cuda-graph-trace graph --baseline-runs 1 --no-analyze --no-calibrate \
  > $W/graphtrace.log 2>&1
echo "graph-trace capture: rc=$? at $(( $(date +%s) - t0 )) s"
mkdir -p /tmp/p32
for i in $(seq -w 1 32); do cp $P/text-01-article.png /tmp/p32/page-$i.png; done
timeout ${SWEEP_S:-130} python3 -m dsocr whatif run --out $W/sweep --pages /tmp/p32 "${WORK[@]}" --warmup 1 \
  --sweep-batch 1,2,4,8,16,32 --no-analyze > $W/sweep.log 2>&1
echo "sweep: rc=$? at $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt
python3 -c "import torch; print('torch', torch.__version__)" >> $W/card.txt
# pack: small files of every run directory, the SQLite exports xz'd (the .nsys-rep stays behind)
for db in $(find $W -name trace.sqlite); do xz -T0 -6 -k "$db"; done
tar -C $W -cf - --exclude=trace.sqlite --exclude=trace.nsys-rep . | split -b 15M -d - "$OUT/pack.tar.part"
tail -3 $W/main.log $W/graphtrace.log $W/sweep.log
ls -la "$OUT"
echo "total $(( $(date +%s) - t0 )) s"
