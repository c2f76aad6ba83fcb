#!/usr/bin/env bash
# Do what README.md's "First commands" say, on a clean clone in a fresh venv, and check that the
# report files appear. The test command (the block's last line) is what .ci/run itself runs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
# Uncommitted work is not in a clean clone: the check is about what is committed.
cd "$work/clone"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install -q --upgrade pip
mapfile -t lines < <(sed -n '/<!-- first-commands:begin -->/,/<!-- first-commands:end -->/p' README.md \
  | grep -v '^<!--' | grep -v '^```' | sed 's/[[:space:]]*#.*$//' | grep -v '^[[:space:]]*$')
[ "${#lines[@]}" -eq 3 ] || { echo "readme-check: expected 3 first commands, found ${#lines[@]}" >&2; exit 1; }
for cmd in "${lines[@]:0:2}"; do
  echo "readme-check: \$ $cmd"
  bash -euo pipefail -c "$cmd"
done
for f in report.md report.html summary.md analysis.json results.sqlite; do
  [ -s "dsocr-report/$f" ] || { echo "readme-check: dsocr-report/$f missing after the README's commands" >&2; exit 1; }
done
python - <<'PY'
import json
doc = json.load(open("dsocr-report/analysis.json"))
assert doc["stages"], "no stages in the bundled sample's analysis"
print("readme-check: report files present;", len(doc["stages"]), "stage rows")
PY
echo "readme-check: ok (test command: ${lines[2]})"
