"""Time ``dsocr analyze`` over N distinct traces: one process against ``--scheduler local`` (Dask).

    python benchmarks/bench_scale_out.py SRC.sqlite[.xz] [--n 16] [--rounds 2] [--workdir DIR]

N time-shifted copies of SRC (benchmarks/make_multi_trace.py: distinct traces, one study) are
built once into ``--workdir``; then each round runs, each as a fresh process, ``dsocr analyze
FILES --format json,md,sqlite`` without and with ``--scheduler local`` (alternating, so that the
machine's drift falls on both), with wall time and the analyze process's peak RSS (``os.wait4``;
the Dask workers are its grandchildren and not counted). The outputs of both are compared byte
for byte every round. Prints a Markdown table (medians over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_multi_trace import shifted_copy
from make_synthetic_trace import materialize_source


def _run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def _same(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in files
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src", type=Path)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dsocr-bench-scale-out"))
    args = parser.parse_args(argv)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    files = [work / f"trace-{k:02d}.sqlite" for k in range(args.n)]
    if not all(f.is_file() for f in files):
        base = materialize_source(args.src, work)
        for k, f in enumerate(files):
            shifted_copy(base, f, k * 1_000_000)
    analyze = [sys.executable, "-m", "dsocr", "analyze", *map(str, files), "--format", "json,md,sqlite", "--quiet"]
    times: dict[str, list[tuple[float, float]]] = {"one process": [], "--scheduler local": []}
    identical = []
    for r in range(args.rounds):
        one, dask = work / f"out-one-{r}", work / f"out-dask-{r}"
        times["one process"].append(_run([*analyze, "--out", str(one)]))
        times["--scheduler local"].append(_run([*analyze, "--out", str(dask), "--scheduler", "local"]))
        identical.append(_same(one, dask))
    cores = os.cpu_count()
    print(f"{args.n} traces ({files[0].stat().st_size / 2**20:.1f} MB each), {args.rounds} rounds, {cores} cores")
    print("\n| run | wall s (median) | peak RSS of the analyze process MiB | outputs byte-identical |")
    print("|---|---:|---:|---|")
    med = {}
    for name, rows in times.items():
        med[name] = statistics.median(w for w, _ in rows)
        rss = statistics.median(m for _, m in rows)
        print(f"| {name} | {med[name]:.1f} | {rss:.0f} | {'yes' if all(identical) else 'NO'} |")
    print(f"\nratio one process / --scheduler local: {med['one process'] / med['--scheduler local']:.2f}")
    print("walls per round: " + "; ".join(f"{k}: {', '.join(f'{w:.1f}' for w, _ in v)}" for k, v in times.items()))
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
