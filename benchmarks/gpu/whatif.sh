#!/usr/bin/env bash
# Issue 11 on one GPU in one call (< 10 min), from the repo root on the GPU machine (carry .device-kit/ and .whl/):
#   bash benchmarks/gpu/whatif.sh
# 1. `dsocr whatif run`: 4 pages x 2 repeats x 32 new tokens, one unprofiled run per variant; the baseline
#    (the vendor-like execution: MoE loop, eager attention, eager decode) and the graph variant also under nsys
#    (--cuda-graph-trace node, the default); variants grouped (moe=grouped), graph (moe=grouped, decode=graph),
#    compile (moe=grouped, decode=compile: torch.compile reduce-overhead, its compile time in timing.json).
#    Environment: PROFILE (default baseline,graph), WHATIF_MAIN_S, SWEEP_S, GRAPHTRACE_S (part timeouts; 0 skips).
# 2. The batch sweep 1..32 with graph decode, unprofiled, on 32 copies of one page (one crop grid, so one
#    forward holds the whole batch).
# 3. The graph variant once more under nsys with --cuda-graph-trace graph (NVIDIA's cheaper mode), unprofiled
#    baseline included, for the profiler overhead of both modes.
# Each part has its own timeout and is packed into $OUT as soon as it ends (main.tar.partNN, sweep.tar.partNN,
# graphtrace.tar.partNN: 15 MB parts of its run directories' small files plus the xz'd SQLite exports), so a
# call cut short still returns what finished. Analysis happens on the CPU machine
# (`dsocr analyze`, `dsocr whatif report`).
set -uo pipefail
source benchmarks/gpu/h100_env.sh
P=src/dsocr/data/pages
W=/tmp/w
mkdir -p "$W" "$OUT"
PAGES=(--pages $P/text-01-article.png --pages $P/mixed-02-table.png --pages $P/text-02-dense.png --pages $P/image-01-figures.png)
WORK=(--mode gundam --repeats 2 --max-new-tokens 32)
t0=$(date +%s)
pack() {  # pack() NAME: the run directories of part NAME (small files, SQLite exports xz'd) into $OUT now, so a
  # call cut short still returns the parts that finished
  for db in $(find $W/$1 -name trace.sqlite 2>/dev/null); do xz -T0 -6 -k "$db"; done
  tar -C $W -cf - --exclude=trace.sqlite --exclude=trace.nsys-rep $1 $1.log | split -b 15M -d - "$OUT/$1.tar.part"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/card.txt
timeout ${WHATIF_MAIN_S:-260} python3 -m dsocr whatif run --out $W/main "${PAGES[@]}" "${WORK[@]}" --nsys "$NSYS" \
  --no-analyze --variant grouped=moe=grouped --variant graph=moe=grouped,decode=graph \
  --variant compile=moe=grouped,decode=compile --profile ${PROFILE:-baseline,graph} > $W/main.log 2>&1
echo "whatif main: rc=$? at $(( $(date +%s) - t0 )) s"
pack main
mkdir -p /tmp/p32
for i in $(seq -w 1 32); do cp $P/text-01-article.png /tmp/p32/page-$i.png; done
timeout ${SWEEP_S:-130} python3 -m dsocr whatif run --out $W/sweep --pages /tmp/p32 "${WORK[@]}" --warmup 1 \
  --sweep-batch 1,2,4,8,16,32 --no-analyze > $W/sweep.log 2>&1
echo "sweep: rc=$? at $(( $(date +%s) - t0 )) s"
pack sweep
[ "${GRAPHTRACE_S:-70}" != 0 ] && timeout ${GRAPHTRACE_S:-70} python3 -m dsocr capture --out $W/graphtrace "${PAGES[@]}" "${WORK[@]}" --nsys "$NSYS" \
  --moe grouped --decode graph --cuda-graph-trace graph --baseline-runs 1 --no-analyze --no-calibrate \
  > $W/graphtrace.log 2>&1
echo "graph-trace capture: rc=$? at $(( $(date +%s) - t0 )) s"
pack graphtrace
tail -3 $W/main.log $W/sweep.log $W/graphtrace.log
ls -la "$OUT"
echo "total $(( $(date +%s) - t0 )) s"
