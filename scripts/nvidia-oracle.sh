#!/usr/bin/env bash
# Run NVIDIA's own report scripts (from Debian's nsight-systems 2023.4, unpacked by
# scripts/install-nsys.sh) on an nsys SQLite export; CSV to stdout.
#   scripts/nvidia-oracle.sh FILE.sqlite REPORT [REPORT...]
# REPORT is a script name under target-linux-x64/reports without .py, e.g. nvtx_gpu_proj_sum,
# cuda_gpu_kern_sum, nvtx_sum, nvtx_kern_sum, cuda_api_sum. With several reports, each CSV is
# preceded by a line `# REPORT`. NSYS home: $DSOCR_NSYS_HOME, else .tools/nsys in the repo.
# The scripts are run directly (the unpacked `nsys stats` cannot import nsysstats) with NVIDIA's
# bundled SQLite on LD_LIBRARY_PATH (it has the extra SQL functions the scripts use).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
home="${DSOCR_NSYS_HOME:-$repo/.tools/nsys}"
if [ $# -lt 2 ]; then
  echo "usage: $0 FILE.sqlite REPORT [REPORT...]   (e.g. nvtx_gpu_proj_sum cuda_gpu_kern_sum)" >&2
  exit 2
fi
file="$1"; shift
[ -f "$file" ] || { echo "nvidia-oracle: $file: no such file; pass an nsys SQLite export" >&2; exit 2; }
target="$(dirname "$(find "$home" -path '*/target-linux-x64/reports/nvtx_gpu_proj_sum.py' 2>/dev/null | head -n1)")"
target="${target%/reports}"
if [ "$target" = "." ] || [ ! -d "$target/reports" ]; then
  echo "nvidia-oracle: no nsight-systems target-linux-x64/reports under $home; run scripts/install-nsys.sh or set DSOCR_NSYS_HOME" >&2
  exit 3
fi
py="${DSOCR_ORACLE_PYTHON:-python3}"
for report in "$@"; do
  script="$target/reports/$report.py"
  [ -f "$script" ] || { echo "nvidia-oracle: no report script $report.py in $target/reports; see that directory for names" >&2; exit 2; }
  [ $# -gt 1 ] && echo "# $report"
  LD_LIBRARY_PATH="$target${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONPATH="$target/python/lib:$target/reports" \
    "$py" "$script" "$file"
done
