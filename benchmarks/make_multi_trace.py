"""Traces for the multi-trace and multi-GPU paths, built from one real nsys SQLite export.

    python benchmarks/make_multi_trace.py copies SRC.sqlite[.xz] OUTDIR --n 16
    python benchmarks/make_multi_trace.py devices SRC.sqlite[.xz] OUT.sqlite --n 2

``copies``: N distinct traces (``trace-00.sqlite`` ...): copy k has every event time shifted by
k ms (same work, different content, so ``dsocr analyze`` takes them as N passes of one study).

``devices``: one export holding N data-parallel workers: the source's processes, threads, events and
GPU are replicated N times, worker k's with its process ids shifted (``globalPid``/``globalTid``
+ k * 1000 << 24, ``pid`` + 1000k), its correlation and NVTX range ids shifted, its kernels,
copies, memsets and syncs on ``deviceId`` k (a ``TARGET_INFO_GPU`` row each) and its times shifted
by k * 137 us (the workers run at the same time, as under ``dsocr capture --gpus N``).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic_trace import _columns, _max, _tables, event_tables, materialize_source

PID_STEP = 1000
DEVICE_SHIFT_NS = 137_000


def shifted_copy(src: Path, dst: Path, offset_ns: int) -> None:
    """``dst``: ``src`` with every event time shifted by ``offset_ns``."""
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("BEGIN")
        for t in event_tables(con):
            sets = [f'"{c}" = "{c}" + {offset_ns}' for c in ("start", "end", "timestamp") if c in _columns(con, t)]
            con.execute(f'UPDATE "{t}" SET {", ".join(sets)}')
        if "ANALYSIS_DETAILS" in _tables(con):
            con.execute(
                f"UPDATE ANALYSIS_DETAILS SET startTime = startTime + {offset_ns}, stopTime = stopTime + {offset_ns}"
            )
        con.execute("COMMIT")
    finally:
        con.close()
    tmp.replace(dst)


def _select(con: sqlite3.Connection, table: str, k: int, corr: int, rng: int) -> str:
    pid_shift = k * PID_STEP << 24
    parts = []
    for col in _columns(con, table, "src"):
        if col in ("start", "end", "timestamp"):
            parts.append(f'"{col}" + {k * DEVICE_SHIFT_NS}')
        elif col == "correlationId":
            parts.append(f'"{col}" + {k * corr}')
        elif col == "rangeId":
            parts.append(f'"{col}" + {k * rng}')
        elif col in ("globalTid", "globalPid"):
            parts.append(f'"{col}" + {pid_shift}')
        elif col == "pid" and table == "PROCESSES":
            parts.append(f'"{col}" + {k * PID_STEP}')
        elif col == "deviceId" or (col == "id" and table == "TARGET_INFO_GPU"):
            parts.append(f"{k}")
        elif col == "uuid" and table == "TARGET_INFO_GPU":
            parts.append(f"\"{col}\" || '-{k}'")
        else:
            parts.append(f'"{col}"')
    return ", ".join(parts)


def multi_device(src: Path, dst: Path, n: int) -> None:
    """``dst``: ``src`` as ``n`` concurrent workers on ``n`` GPUs (see the module docstring)."""
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("ATTACH DATABASE ? AS src", (str(src),))
        tables = event_tables(con, "src")
        corr = _max(con, tables, "correlationId", "src") + 1
        rng = _max(con, tables, "rangeId", "src") + 1
        per_process = [
            t
            for t in _tables(con, "src")
            if {"globalTid", "globalPid"} & set(_columns(con, t, "src")) and t != "ANALYSIS_FILE"
        ]
        per_process += ["TARGET_INFO_GPU", "TARGET_INFO_CUDA_CONTEXT_INFO"]
        con.execute("BEGIN")
        for k in range(1, n):
            for t in per_process:
                if t not in _tables(con, "src"):
                    continue
                cols = ", ".join(f'"{c}"' for c in _columns(con, t, "src"))
                con.execute(f'INSERT INTO main."{t}" ({cols}) SELECT {_select(con, t, k, corr, rng)} FROM src."{t}"')
        if "ANALYSIS_DETAILS" in _tables(con):
            extra = (n - 1) * DEVICE_SHIFT_NS
            con.execute(f"UPDATE ANALYSIS_DETAILS SET duration = duration + {extra}, stopTime = stopTime + {extra}")
        con.execute("COMMIT")
        con.execute("DETACH DATABASE src")
    finally:
        con.close()
    tmp.replace(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=("copies", "devices"))
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path, help="copies: a directory; devices: the export to write")
    parser.add_argument("--n", type=int, default=2)
    args = parser.parse_args(argv)
    parent = args.out if args.what == "copies" else args.out.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        base = materialize_source(args.src, Path(tmp))
        if args.what == "copies":
            for k in range(args.n):
                shifted_copy(base, args.out / f"trace-{k:02d}.sqlite", k * 1_000_000)
        else:
            multi_device(base, args.out, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
