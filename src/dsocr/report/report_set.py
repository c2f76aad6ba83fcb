"""Write a report's files into ``--out`` all or nothing, as one set.

Every file is written into a hidden staging directory inside ``--out`` (same file system, so the
renames are atomic), then swapped in: the report files already in ``--out`` (any of
:data:`REPORT_ENTRIES`, also those the new set lacks) move aside into a second hidden directory,
the new ones move in, and the old ones are deleted. If a rename fails, what moved is moved back:
``--out`` holds the whole old set or the whole new one, never a mix of two analyses. Report files
of an older analysis that the new set lacks (``--format md`` into a full report) are removed, never
left beside the new ones looking current; an input of this analysis is never removed. SIGTERM
while writing is handled like Ctrl-C, so no hidden directory is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Final

from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, EnvironmentProblem
from dsocr.contract.paths import is_disk_full

#: Top-level entries of ``--out`` that belong to a report set (``plots`` is the SVG directory).
REPORT_ENTRIES: Final = (
    rundir.ANALYSIS_JSON,
    rundir.REPORT_MD,
    rundir.REPORT_HTML,
    rundir.SUMMARY_MD,
    rundir.RESULTS_SQLITE,
    "plots",
)
STAGING_PREFIX: Final = ".dsocr-report-new."
ASIDE_PREFIX: Final = ".dsocr-report-old."


def write_report_set(
    out_dir: Path,
    texts: Mapping[str, str],
    build: Mapping[str, Callable[[Path], None]] | None = None,
    inputs: Iterable[Path] = (),
    entries: Iterable[str] = REPORT_ENTRIES,
) -> list[Path]:
    """Write ``texts`` (relative path -> text) and ``build`` (relative path -> a function writing the file at
    a path) into ``out_dir`` as one set (module doc); the written paths.

    ``inputs``: files this report was made from; never removed as an older report's file. ``entries``: the
    top-level names of this kind of report set (another kind's files in ``out_dir`` are left alone).
    """
    build = build or {}
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BadInput(f"--out {out_dir}: exists and is not a directory; choose another --out")
    made_out = not os.path.exists(out_dir)
    staging: Path | None = None
    aside: Path | None = None
    done = False
    with _sigterm_as_interrupt():
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=".tmp", dir=out_dir))
            for rel, fn in build.items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                fn(staging / rel)
            for rel, text in texts.items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_text(text, encoding="utf-8")
            aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, suffix=".tmp", dir=out_dir))
            names = tuple(entries)
            _swap(out_dir, staging, aside, _keep(out_dir, inputs, names), names)
            done = True
        except Exception as exc:  # OSError, or SQLite's "disk is full" / "disk I/O error" from a build
            if not (isinstance(exc, OSError) or is_disk_full(exc)):
                raise
            raise _write_failure(out_dir, exc) from exc
        finally:
            for tmp in (staging, aside):
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
            if made_out and not done:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only when empty
    return [out_dir / r for r in [*build, *texts]]


def _write_failure(out_dir: Path, exc: Exception) -> EnvironmentProblem:
    """One line, exit code 5 (docs/exit-codes.md: an output that cannot be written there): a full disk, or a
    place that cannot be written (no permission, a read-only file system)."""
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    kept = "nothing of it was written (an older report there is unchanged)"
    if is_disk_full(exc):
        return EnvironmentProblem(
            f"--out {out_dir}: the report cannot be written ({reason}); {kept}: free some space or choose another --out"
        )
    return EnvironmentProblem(f"--out {out_dir}: cannot write there ({reason}); {kept}: choose another --out")


def _keep(out_dir: Path, inputs: Iterable[Path], entries: tuple[str, ...] = REPORT_ENTRIES) -> set[str]:
    """The report entries of ``out_dir`` that are inputs of this analysis (never moved aside)."""
    keep: set[str] = set()
    for name in entries:
        entry = out_dir / name
        for given in inputs:
            with contextlib.suppress(OSError):
                if entry.exists() and os.path.samefile(entry, given):
                    keep.add(name)
    return keep


def _swap(out_dir: Path, staging: Path, aside: Path, keep: set[str], entries: tuple[str, ...] = REPORT_ENTRIES) -> None:
    """Move the old report entries aside and the staged ones in; on a failure, move everything back."""
    new = sorted(p.name for p in staging.iterdir())
    old = [n for n in entries if n not in keep and (out_dir / n).exists()]
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for name in old:
            os.replace(out_dir / name, aside / name)
            moved_aside.append(name)
        for name in new:
            os.replace(staging / name, out_dir / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            with contextlib.suppress(OSError):
                os.replace(out_dir / name, staging / name)
        for name in reversed(moved_aside):
            with contextlib.suppress(OSError):
                os.replace(aside / name, out_dir / name)
        raise


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (Ctrl-C's cleanup and exit code) while the set is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
