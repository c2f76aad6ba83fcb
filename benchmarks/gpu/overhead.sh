#!/usr/bin/env bash
# Where nsys's perturbation comes from (H100): the same worker run (4 pages x 2 repeats x 16 tokens,
# gundam) without nsys, and under nsys with several trace settings; prints per-stage CUDA-event
# time per pass for each. Usage (repo root, on the GPU machine): bash benchmarks/gpu/overhead.sh
set -uo pipefail
source benchmarks/gpu/h100_env.sh
W=/tmp/ovh; mkdir -p $W
P=src/dsocr/data/pages
cfg() {  # $1 name, $2 capture range
  cat > $W/$1.json <<JSON
{"pages": ["$P/text-01-article.png", "$P/mixed-02-table.png", "$P/image-03-charts.png", "$P/text-02-dense.png"],
 "timing_out": "$W/$1-timing.json", "device": "cuda", "mode": "gundam", "repeats": 2, "warmup": 2,
 "max_new_tokens": 16, "capture_range": "$2"}
JSON
}
"$NSYS" profile --help | grep -E -- "--cuda-event-trace|--cudabacktrace|--cuda-trace-scope|--cuda-memory-usage|--cuda-um" | head
run() {  # $1 name, rest: nsys profile options (none = no nsys)
  name=$1; shift
  if [ "$name" = base ]; then cfg $name none; python3 -m dsocr.capture.worker --config $W/$name.json > $W/$name.log 2>&1
  else cfg $name cuda-profiler-api; "$NSYS" profile "$@" --sample=none --cpuctxsw=none --capture-range=cudaProfilerApi \
       --capture-range-end=stop -f true -o $W/$name python3 -m dsocr.capture.worker --config $W/$name.json > $W/$name.log 2>&1; fi
  echo "$name rc=$?"
}
run base
run cuda_nvtx --trace=cuda,nvtx --cuda-graph-trace=node
run cuda_nvtx_noevent --trace=cuda,nvtx --cuda-graph-trace=node --cuda-event-trace=false
run nvtx_only --trace=nvtx
run base2
python3 - <<'PY'
import json, os, statistics as st
from collections import defaultdict
W = "/tmp/ovh"
rows = {}
for name in ["base", "cuda_nvtx", "cuda_nvtx_noevent", "nvtx_only", "base2"]:
    f = f"{W}/{name}-timing.json"
    if not os.path.exists(f):
        print(name, "no timing"); continue
    agg = defaultdict(lambda: defaultdict(float))
    for r in json.load(open(f))["records"]:
        agg[r["stage"]][r["repeat"]] += r["ms"]
    rows[name] = {s: [round(x, 1) for x in v.values()] for s, v in agg.items()}
stages = ["vision", "sam", "clip", "prefill", "decode"]
print("variant".ljust(20), *(s.rjust(18) for s in stages))
for name, r in rows.items():
    print(name.ljust(20), *(str(r.get(s)).rjust(18) for s in stages))
PY
