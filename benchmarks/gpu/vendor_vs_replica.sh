#!/usr/bin/env bash
# Issue 10 on one GPU, in one call (< 10 min): the checkpoint's own code (vendor path) against dsocr's replica.
#   bash benchmarks/gpu/vendor_vs_replica.sh [vendor|replica|all]   (repo root; carry .device-kit/ and .whl/)
# `vendor` = steps 1 and the vendor capture, `replica` = the two replica captures (two calls of < 10 min each
# when model builds are slow; `all`, the default, does both in one call). `same` = step 1, then the vendor path
# and the replica's default execution captured from that one checkpoint (the same weights: random weights of
# each implementation's own initialisation route prefill's tokens to different numbers of experts).
# 1. On the same card: a random-weight checkpoint written by the vendor's code; `dsocr generate --json` on it
#    with the vendor path and with the replica (first-token top-5, prompt length, ids).
# 2. The same 2 pages x 2 repeats x 32 tokens captured under nsys (--no-calibrate, one unprofiled baseline):
#    the vendor path (random weights), the replica's default execution, the replica's grouped/SDPA variant.
# $OUT gets 7 files: summary.json (card, versions, generate results, capture exit codes) and per capture
# <name>-small.tgz (manifest, timing, logs) and <name>.sqlite.xz.
# The vendor's wheels (transformers 4.46.3, ...) go to /tmp/site-vendor, first on PYTHONPATH for the vendor
# processes only; the machine's transformers 5.x stays for the replica.
set -uo pipefail
part=${1:-all}
source benchmarks/gpu/h100_env.sh                   # /tmp/site (nvtx, CLI deps), $NSYS, LD_LIBRARY_PATH
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-vendor .device-kit/wheels-vendor/*.whl
VENDOR=(env "PYTHONPATH=/tmp/site-vendor:/tmp/site:$PWD/src")
CODE=.device-kit/vendor-deepseek-ocr                # code + config, no weights
P=src/dsocr/data/pages
PAGES=(--pages $P/text-01-article.png --pages $P/mixed-02-table.png)
COMMON=(--repeats 2 --max-new-tokens 32 --baseline-runs 1 --no-analyze --no-calibrate --nsys "$NSYS" "${PAGES[@]}")
declare -A RC=([vendor]=-1 [replica]=-1 [replica-grouped-sdpa]=-1)
GEN=(generate --page $P/text-01-article.png --max-new-tokens 8 --json)
mkdir -p /tmp/runs "$OUT"
if [ "$part" != replica ]; then
"${VENDOR[@]}" python3 -c "import einops, addict, easydict, transformers; print('vendor env ok', transformers.__version__)"

# 1. one checkpoint (the vendor's model, seed 0, on the GPU), then both implementations on it
"${VENDOR[@]}" python3 - "$CODE" <<'EOF'
import shutil, sys
from safetensors.torch import save_file
from dsocr.execution.checkpoint_rules import plan_model
from dsocr.execution.vendor import load_vendor
shutil.copytree(sys.argv[1], "/tmp/ck", ignore=shutil.ignore_patterns("*.index.json"))
m = load_vendor(plan_model("/tmp/ck", trust_remote_code=True, random_weights=True), device="cuda", seed=0)
save_file({n: p.detach().cpu().contiguous() for n, p in m.root.named_parameters()}, "/tmp/ck/model.safetensors",
          metadata={"format": "pt"})  # transformers 4.46.3's from_pretrained needs it
EOF
"${VENDOR[@]}" python3 -m dsocr "${GEN[@]}" --model /tmp/ck --trust-remote-code > /tmp/gen-vendor.json 2>/tmp/gen-vendor.err
python3 -m dsocr "${GEN[@]}" --model /tmp/ck > /tmp/gen-replica.json 2>/tmp/gen-replica.err
if [ "$part" = same ]; then
  t0=$(date +%s)
  "${VENDOR[@]}" python3 -m dsocr capture --model /tmp/ck --trust-remote-code --out /tmp/runs/vendor "${COMMON[@]}"
  RC[vendor]=$?
  python3 -m dsocr capture --model /tmp/ck --out /tmp/runs/replica "${COMMON[@]}"
  RC[replica]=$?
  part=done
fi
rm -rf /tmp/ck

# 2. the captures
if [ "$part" != done ]; then
t0=$(date +%s)
"${VENDOR[@]}" python3 -m dsocr capture --model "$CODE" --trust-remote-code --random-weights --out /tmp/runs/vendor "${COMMON[@]}"
RC[vendor]=$?
fi
fi
if [ "$part" != vendor ] && [ "$part" != done ]; then
t0=$(date +%s)
python3 -m dsocr capture --out /tmp/runs/replica "${COMMON[@]}"
RC[replica]=$?
python3 -m dsocr capture --moe grouped --attn sdpa --out /tmp/runs/replica-grouped-sdpa "${COMMON[@]}"
RC[replica-grouped-sdpa]=$?
fi
echo "captures: ${RC[*]} in $(( $(date +%s) - t0 )) s"

# 3. pack
PART=$part python3 - "${RC[vendor]}" "${RC[replica]}" "${RC[replica-grouped-sdpa]}" <<'EOF'
import json, os, subprocess, sys, torch
def read(p):
    try:
        return json.load(open(p))
    except Exception as exc:
        err = p.replace(".json", ".err")
        return {"error": f"{exc}", "stderr": open(err).read()[-3000:] if os.path.exists(err) else None}
out = {
    "card": torch.cuda.get_device_name(0), "torch": torch.__version__,
    "generate": {"vendor": read("/tmp/gen-vendor.json"), "replica": read("/tmp/gen-replica.json")},
    "capture_rc": dict(zip(["vendor", "replica", "replica-grouped-sdpa"], map(int, sys.argv[1:]))),
}
json.dump(out, open(os.path.join(os.environ["OUT"], f"summary-{os.environ.get('PART', 'all')}.json"), "w"), indent=1)
EOF
for name in vendor replica replica-grouped-sdpa; do
  run=/tmp/runs/$name
  [ -d "$run" ] && tar -C "$run" -czf "$OUT/$name-small.tgz" --exclude=trace.sqlite --exclude=trace.nsys-rep . 2>/dev/null
  [ -d "$run" ] || continue
  [ -f "$run/trace.sqlite" ] && xz -T0 -6 -c "$run/trace.sqlite" > "$OUT/$name.sqlite.xz"
done
ls -la "$OUT"
