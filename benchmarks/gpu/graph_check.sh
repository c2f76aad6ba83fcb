#!/usr/bin/env bash
# GPU check of the static-cache decode (docs/variants.md), from the repo root on the GPU machine:
#   bash benchmarks/gpu/graph_check.sh
# 1. `dsocr generate` of one page with --decode eager, graph and compile (all --moe grouped, bf16): the
#    generated ids must agree (eager vs graph: the same greedy tokens within bf16 tolerance; the script
#    prints how many of the 32 ids match) and the first token's top logits are printed side by side.
# 2. One small unprofiled-only capture per decode (2 pages x 1 repeat x 32 tokens, no nsys, no analysis):
#    decode ms per step from timing.json, graph capture / compile seconds from its setup.
# Everything lands in $OUT (small JSON files).
set -uo pipefail
source benchmarks/gpu/h100_env.sh
P=src/dsocr/data/pages
mkdir -p "$OUT"
for d in eager graph compile; do
  start=$(date +%s)
  python3 -m dsocr generate --moe grouped --decode $d --max-new-tokens 32 --page $P/text-01-article.png --json \
    > "$OUT/generate-$d.json" 2> "$OUT/generate-$d.err"
  echo "generate --decode $d: rc=$? in $(( $(date +%s) - start )) s"
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
docs = {}
for d in ("eager", "graph", "compile"):
    try:
        docs[d] = json.loads((out / f"generate-{d}.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"{d}: no result ({exc})")
base = docs.get("eager")
for d, doc in docs.items():
    same = sum(a == b for a, b in zip(doc["ids"], base["ids"])) if base else 0
    top = [(t["id"], round(t["logit"], 3)) for t in doc["first_token_top"]]
    print(f"{d:8s} ids equal to eager: {same}/{len(doc['ids'])}  first-token top: {top}")
PY
for d in eager graph; do
  run=/tmp/runs/decode-$d
  rm -rf "$run"
  python3 -m dsocr capture --mode gundam --moe grouped --decode $d --repeats 1 --max-new-tokens 32 \
    --pages $P/text-01-article.png --pages $P/mixed-02-table.png --no-baseline --no-analyze --no-calibrate \
    --out "$run" > "$OUT/capture-$d.log" 2>&1
  echo "capture --decode $d: rc=$?"
  cp "$run/timing.json" "$OUT/timing-$d.json" 2>/dev/null
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for d in ("eager", "graph"):
    p = out / f"timing-{d}.json"
    if not p.is_file():
        print(f"{d}: no timing.json")
        continue
    t = json.loads(p.read_text())
    steps = [r["ms"] for r in t["records"] if r["stage"] == "decode_step"]
    setup = {k: v for k, v in t["setup"].items() if k in ("graph_capture_s", "compile_s", "static_cache_lengths")}
    print(f"{d:6s} decode_step mean {sum(steps) / len(steps):.2f} ms over {len(steps)} steps; "
          f"execution {t['model']['execution']}; {setup}")
PY
