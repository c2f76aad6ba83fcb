"""Time rendering the H100 fixture's report: report.html, summary.md and the six SVG plots.

    python benchmarks/bench_report.py                 # median of 5
    python benchmarks/bench_report.py --reps 9 --write-docs

The fixture is analyzed once (untimed) into analysis.json. Then, per repetition:
(1) in-process: analysis document -> report view -> report.html + summary.md + plots/*.svg
written to a temp directory (what `dsocr analyze` adds for the HTML report); (2) the same in a
fresh interpreter (`python -c`), so imports (polars, jinja2) and start-up are included.
Medians to stdout as a Markdown table; with `--write-docs` into docs/benchmarks.md between the
`bench_report` markers. Target: < 5 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "nsys" / "h100-decoder-moe" / "trace.sqlite.xz"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_report:begin -->", "<!-- bench_report:end -->"

RENDER = """
import json, sys
from pathlib import Path
from dsocr.report import html
from dsocr.report.adapt import view_from_analysis
doc = json.loads(Path(sys.argv[1]).read_text())
html.write(view_from_analysis(doc), Path(sys.argv[2]))
"""


def render_once(doc: dict[str, object], out: Path) -> float:
    """One in-process render; seconds."""
    from dsocr.report import html
    from dsocr.report.adapt import view_from_analysis

    t0 = time.perf_counter()
    html.write(view_from_analysis(doc), out)
    return time.perf_counter() - t0


def process_once(doc_path: Path, out: Path) -> float:
    """One render in a fresh interpreter; seconds (start-up and imports included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", RENDER, str(doc_path), str(out)], check=True)
    return time.perf_counter() - t0


def write_docs(section: str) -> None:
    """Put ``section`` between the markers of docs/benchmarks.md (append them if absent)."""
    block = f"{BEGIN}\n{section}\n{END}"
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, default=FIXTURE)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()

    from dsocr.analyze.pipeline import run_analysis

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp_s:
        tmp = Path(tmp_s)
        doc = json.loads(json.dumps(run_analysis([args.trace]).to_dict(), default=str))
        doc_path = tmp / "analysis.json"
        doc_path.write_text(json.dumps(doc))
        render_once(doc, tmp / "warm")  # warm imports, template compilation, page cache
        inproc = [render_once(doc, tmp / f"in{i}") for i in range(args.reps)]
        proc = [process_once(doc_path, tmp / f"proc{i}") for i in range(args.reps)]
        sizes = {p.name: p.stat().st_size for p in (tmp / "in0").rglob("*") if p.is_file()}

    med_in, med_proc = statistics.median(inproc), statistics.median(proc)
    html_kb = sizes.get("report.html", 0) / 1024
    svg_kb = sum(v for k, v in sizes.items() if k.endswith(".svg")) / 1024
    cpu = platform.processor() or platform.machine()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    section = "\n".join(
        [
            "## Report rendering (bench_report.py)",
            "",
            f"{when}, {os.cpu_count()} CPU cores ({cpu}, 1-min load average {load:.1f} at the end), "
            f"Python {platform.python_version()}; "
            f"trace: {args.trace.name} (H100 fixture, analyzed once, untimed); median of {args.reps}. "
            "Renders report.html, summary.md and the six SVG plots from analysis.json. Target: < 5 s.",
            "",
            "| what | median | min | max |",
            "|---|---:|---:|---:|",
            f"| in-process: analysis.json -> view -> HTML + summary + SVGs | {med_in * 1e3:.0f} ms | "
            f"{min(inproc) * 1e3:.0f} ms | {max(inproc) * 1e3:.0f} ms |",
            f"| fresh process (start-up and imports included) | {med_proc * 1e3:.0f} ms | "
            f"{min(proc) * 1e3:.0f} ms | {max(proc) * 1e3:.0f} ms |",
            "",
            f"report.html is {html_kb:.0f} KiB (plots inline), the six SVG files {svg_kb:.0f} KiB together.",
        ]
    )
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
