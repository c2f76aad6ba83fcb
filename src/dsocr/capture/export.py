"""``nsys export`` to SQLite, and the check that the export holds the ``dsocr`` NVTX ranges.

The export is written to a hidden temporary name, checked there, and only then renamed onto
``trace.sqlite``: a re-export that comes out unreadable or without the ``dsocr`` ranges never
replaces a good trace. A failed export keeps the ``.nsys-rep`` (``dsocr export RUN_DIR`` retries it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs

from dsocr.capture.nsys import NSYS_DROPS_NEW_NVTX, NVTX_NEW_API, NsysVersion, drops_new_nvtx, export_command
from dsocr.contract import nvtx_names, rundir
from dsocr.contract.errors import BadInput, InputNotFound, RunFailed

#: NVTX_EVENTS.eventType values (ENUM_NSYS_EVENT_TYPE).
NVTX_PUSHPOP: Final = 59
NVTX_STARTEND: Final = 60
NVTX_DOMAIN_CREATE: Final = 75

EXPORT_TIMEOUT_S: Final = 3600.0


@attrs.frozen
class RangeCounts:
    """What an export holds: ``dsocr`` range counts per name, and GPU kernel rows."""

    counts: dict[str, int]
    kernels: int

    @property
    def total(self) -> int:
        """All ``dsocr`` ranges."""
        return sum(self.counts.values())

    def get(self, name: str) -> int:
        """Instances of one range name."""
        return self.counts.get(name, 0)


def part_path(sqlite: Path) -> Path:
    """The hidden file an export is written to before it is checked and renamed onto ``sqlite``."""
    return sqlite.with_name(f".{sqlite.stem}.part.sqlite")


@contextlib.contextmanager
def exported(nsys: Path, rep: Path, sqlite: Path, timeout: float = EXPORT_TIMEOUT_S) -> Iterator[tuple[Path, float]]:
    """Export ``rep`` into :func:`part_path` of ``sqlite``; yield that file and the seconds it took.

    The caller checks the part file and renames it onto ``sqlite`` (:func:`install`); whatever
    happens (a failed check, Ctrl-C, SIGTERM) the part file is gone afterwards. Raises RunFailed
    naming the report and ``dsocr export`` when nsys fails.
    """
    if not rep.is_file():
        raise InputNotFound(f"{rep}: no such nsys report; capture again with `dsocr capture`")
    part = part_path(sqlite)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    try:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                export_command(nsys, rep, part), capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RunFailed(
                f"nsys export of {rep} failed ({exc}); the report is kept: retry with `dsocr export {rep.parent}`"
            ) from exc
        if done.returncode != 0 or not part.is_file():
            said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            reason = said[-1].strip()[:200] if said else "no output"
            raise RunFailed(
                f"nsys export of {rep} failed (exit code {done.returncode}: {reason}); the report is kept: "
                f"retry with `dsocr export {rep.parent}`, or open it in the Nsight Systems GUI"
            )
        yield part, time.perf_counter() - started
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def install(part: Path, sqlite: Path) -> None:
    """Rename a checked export onto ``sqlite`` (atomically)."""
    part.replace(sqlite)


def counted(part: Path, sqlite: Path, rep: Path) -> RangeCounts:
    """:func:`count_ranges` of a fresh export in ``part``; RunFailed (nsys wrote a broken file) when unreadable."""
    try:
        return count_ranges(part, sqlite)
    except BadInput as exc:
        reason = str(exc.__cause__ or exc.message)
        raise RunFailed(
            f"nsys export of {rep} wrote a broken file (not a readable SQLite export: {reason}); "
            f"retry with `dsocr export {rep.parent}`"
        ) from None


def count_ranges(sqlite: Path, name: Path | None = None) -> RangeCounts:
    """Count the ``dsocr``-domain NVTX ranges per name, and the kernel rows, in an export.

    ``name``: the path messages name (the target, when ``sqlite`` is its part file).
    """
    shown = name or sqlite
    try:
        con = sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BadInput(f"{shown}: cannot open the SQLite export ({exc}); export again with `dsocr export`") from exc
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts: dict[str, int] = {}
        if "NVTX_EVENTS" in tables:
            has_ids = "StringIds" in tables
            text = "coalesce(e.text, s.value)" if has_ids else "e.text"
            join = "LEFT JOIN StringIds s ON s.id = e.textId" if has_ids else ""
            domains = [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT e.domainId FROM NVTX_EVENTS e {join} "
                    f"WHERE e.eventType = {NVTX_DOMAIN_CREATE} AND {text} = ?",
                    (nvtx_names.DOMAIN,),
                )
            ]
            marks = ",".join("?" * len(domains)) or "NULL"
            rows = con.execute(
                f"SELECT {text} AS name, count(*) FROM NVTX_EVENTS e {join} "
                f"WHERE e.eventType IN ({NVTX_PUSHPOP}, {NVTX_STARTEND}) AND e.domainId IN ({marks}) GROUP BY 1",
                domains,
            ).fetchall()
            counts = {str(name): int(n) for name, n in rows if name is not None}
        kernels = 0
        if "CUPTI_ACTIVITY_KIND_KERNEL" in tables:
            kernels = int(con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0])
        return RangeCounts(counts=counts, kernels=kernels)
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"{shown}: not a readable nsys SQLite export ({exc}); export again with `dsocr export`") from exc
    finally:
        con.close()


def check_ranges(
    found: RangeCounts,
    sqlite: Path,
    nsys_version: NsysVersion,
    nvtx_version: str | None,
    repeats: int,
    pages: int,
    device: str,
    workers: int = 1,
) -> list[str]:
    """Raise RunFailed when the export holds no ``dsocr`` stage ranges; return warnings for gaps.

    ``workers``: a data-parallel capture's worker count (each opens its own ``repeat`` ranges).
    """
    nvtx_text = nvtx_version or "unknown"
    if found.get(nvtx_names.REPEAT) == 0 and found.get(nvtx_names.PAGE) == 0:
        if drops_new_nvtx(nsys_version, nvtx_version):
            why = (
                f"nsys {nsys_version} (<= {NSYS_DROPS_NEW_NVTX[0]}.{NSYS_DROPS_NEW_NVTX[1]}) silently drops the ranges "
                f"of the nvtx package {nvtx_text} (>= {'.'.join(map(str, NVTX_NEW_API))})"
            )
        else:
            why = f"nsys {nsys_version} recorded none of the ranges the nvtx package {nvtx_text} emitted"
        raise RunFailed(
            f"{sqlite}: the trace holds no '{nvtx_names.DOMAIN}' NVTX ranges: {why}; "
            f'`pip install "nvtx>=0.2.10,<0.2.12"` (recorded by every nsys tried) or use nsys >= 2025.3'
        )
    warnings: list[str] = []
    expected = {nvtx_names.REPEAT: repeats * workers, nvtx_names.PAGE: repeats * pages}
    shape = f"{repeats} repeats x {pages} pages" + (f" over {workers} workers" if workers > 1 else "")
    for name, want in expected.items():
        if found.get(name) != want:
            warnings.append(
                f"{sqlite.name} holds {found.get(name)} '{name}' ranges, expected {want} "
                f"({shape}): the capture range may have cut the run"
            )
    if device != "cpu" and found.kernels == 0:
        warnings.append(
            f"{sqlite.name} holds no GPU kernels: nsys {nsys_version} may be too old for this CUDA "
            "(2023.4 loses the kernels of CUDA 13 programs)"
        )
    return warnings


def run_paths(run_dir: Path) -> tuple[Path, Path]:
    """The ``trace.nsys-rep`` and ``trace.sqlite`` of a run directory."""
    return run_dir / rundir.TRACE_REP, run_dir / rundir.TRACE_SQLITE
