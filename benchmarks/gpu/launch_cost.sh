#!/usr/bin/env bash
# What nsys's CUDA tracing costs per kernel launch on the H100 VM: a loop of 20,000 tiny torch ops
# (one kernel launch each), host time per launch, without nsys and under nsys with several trace
# settings (capture range = cudaProfilerStart/Stop around the timed loops, as dsocr's worker does).
# Usage (repo root, on the GPU machine): bash benchmarks/gpu/launch_cost.sh
set -uo pipefail
source benchmarks/gpu/h100_env.sh
cat > /tmp/launch_cost.py <<'PY'
import time, torch
x = torch.zeros(1024, device="cuda")
for _ in range(2000):
    x.add_(1)
torch.cuda.synchronize()
torch.cuda.profiler.start()
per = []
for _ in range(5):
    t = time.perf_counter_ns()
    for _ in range(20000):
        x.add_(1)
    torch.cuda.synchronize()
    per.append((time.perf_counter_ns() - t) / 20000 / 1000)
torch.cuda.profiler.stop()
import os, threading
print("us per launch (5 loops):", " ".join(f"{p:.2f}" for p in per),
      f"| cpus {len(os.sched_getaffinity(0))} nice {os.nice(0)} threads {threading.active_count()}"
      f" LD_PRELOAD={'set' if os.environ.get('LD_PRELOAD') else 'unset'}")
PY
run() {  # $1 label, rest: nsys options (none: no nsys)
  label=$1; shift
  if [ $# -eq 0 ]; then out=$(python3 /tmp/launch_cost.py 2>&1 | grep "us per launch")
  else out=$("$NSYS" profile "$@" --sample=none --cpuctxsw=none --capture-range=cudaProfilerApi \
      --capture-range-end=stop -f true -o /tmp/lc python3 /tmp/launch_cost.py 2>&1 | grep "us per launch"); fi
  echo "$label: $out"
}
run "no nsys"
run "cuda,nvtx (dsocr)" --trace=cuda,nvtx --cuda-graph-trace=node --cuda-event-trace=false
run "cuda,nvtx, event trace on" --trace=cuda,nvtx --cuda-graph-trace=node
run "nvtx only" --trace=nvtx
run "no trace at all" --trace=none
run "no nsys again"
run "cuda only" --trace=cuda --cuda-event-trace=false
run "cuda,nvtx (dsocr) again" --trace=cuda,nvtx --cuda-graph-trace=node --cuda-event-trace=false
