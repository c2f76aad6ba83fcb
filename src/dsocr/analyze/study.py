"""Several inputs as one study or refused: copies of one export told apart by content, partial runs
warned, and the GPUs, stage names and stage nesting of every file checked against the first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dsocr.analyze import integrity
from dsocr.analyze.analysis import TraceInfo, TraceResult
from dsocr.analyze.input_files import resolve_input
from dsocr.analyze.stages import DSOCR, StageTables

if TYPE_CHECKING:
    from dsocr.analyze.workload_from_run import RunFiles
from dsocr.contract.errors import BadInput
from dsocr.contract.paths import is_regular_file

#: Manifest statuses of a capture that did not finish (its trace holds only part of the passes).
PARTIAL_STATUSES: Final = frozenset({"interrupted", "failed", "running"})

#: The tables whose rows make a trace what it is: copies of one trace agree on all of them.
CONTENT_TABLES: Final = (
    ("NVTX_EVENTS", "start", "end", "eventType"),
    ("CUPTI_ACTIVITY_KIND_KERNEL", "start", "end", "correlationId"),
    ("CUPTI_ACTIVITY_KIND_RUNTIME", "start", "end", "correlationId"),
)

#: The modulus that keeps the fingerprint's sums exact within SQLite's 64-bit integers.
_MOD: Final = 1_000_000_007


def content_fingerprint(path: Path) -> tuple[object, ...] | None:
    """What copies of one SQLite export share whatever re-saved them (``VACUUM INTO``, a changed
    ``EXPORT_TIME_UTC``, another page size): per event table its row count, the smallest start, the
    largest end and sums of the start, end and id columns. None when ``path`` is not a readable export."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        parts: list[object] = []
        for table, start, end, ident in CONTENT_TABLES:
            if table not in tables:
                parts.append((table, None))
                continue
            row = con.execute(
                f'SELECT count(*), min("{start}"), max("{end}"), sum("{start}" % {_MOD}), '
                f'sum(coalesce("{end}", -1) % {_MOD}), sum(coalesce("{ident}", -1) % {_MOD}) FROM {table}'
            ).fetchone()
            parts.append((table, *row))
        return tuple(parts) if any(p[1] for p in parts if isinstance(p, tuple)) else None
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _identity(path: Path) -> tuple[object, ...]:
    """A key equal for copies of one trace: its content fingerprint, else (not an SQLite export) the file itself."""
    if is_regular_file(path):
        found = content_fingerprint(path)
        if found is not None:
            return ("content", *found)
    return ("path", str(path.resolve()))


def distinct_inputs(paths: Sequence[Path]) -> list[Path]:
    """The export of each given path (:func:`resolve_input`); BadInput when two are the same trace (the same
    file, or copies of one trace by content)."""
    resolved = [resolve_input(p) for p in paths]
    if len(resolved) < 2:
        return resolved  # nothing to tell apart
    seen: dict[tuple[object, ...], tuple[Path, Path]] = {}
    for given, path in zip(paths, resolved, strict=True):
        key = _identity(path)
        if key in seen:
            first, first_path = seen[key]
            same = "the same file" if first_path.resolve() == path.resolve() else "copies of one trace (same content)"
            raise BadInput(
                f"{first} and {given}: {same}, not two passes; give each trace once "
                "(several files must be different captures of one workload)"
            )
        seen[key] = (given, path)
    return resolved


def partial_run_warning(given: Path, files: RunFiles | None) -> str | None:
    """One warning line when ``given`` is a run directory (or a file in one, its documents ``files``) whose
    capture did not finish (a corrupt manifest is reported with the run files)."""
    directory = given if given.is_dir() else given.parent
    status = files.status if files is not None else None
    if status not in PARTIAL_STATUSES:
        return None
    return (
        f"{directory}: the capture's manifest status is '{status}': the trace holds only part of the passes "
        "(the report covers what was captured); recapture for a complete run"
    )


def stage_names(stages: StageTables) -> frozenset[str]:
    return frozenset(stages.instances.get_column("stage").unique().to_list())


def _gpu_names(gpus: Sequence[dict[str, Any]]) -> str:
    return ", ".join(sorted(str(g.get("name")) for g in gpus)) or "no GPU"


#: How to go on when several traces are not one study.
NOT_ONE_STUDY_FIX: Final = "analyze them separately (or compare two run directories with `dsocr diff`)"


def check_same_gpus(first: TraceInfo, other_file: str, other_gpus: Sequence[dict[str, Any]]) -> None:
    """BadInput when a trace was taken on other GPUs than the first one (checked right after loading)."""
    a, b = _gpu_names(first.gpus), _gpu_names(other_gpus)
    if a != b:
        raise BadInput(f"{first.file} and {other_file}: traced on different GPUs ({a} vs {b}); {NOT_ONE_STUDY_FIX}")


def check_same_study(
    first: TraceInfo, other: TraceInfo, first_stages: frozenset[str], other_stages: frozenset[str]
) -> None:
    """BadInput when two traces cannot be passes of one study (GPU or stage ranges differ)."""
    where = f"{first.file} and {other.file}"
    fix = NOT_ONE_STUDY_FIX
    check_same_gpus(first, other.file, other.gpus)
    if first.stage_mode != other.stage_mode:
        raise BadInput(
            f"{where}: different stage kinds ({first.stage_mode} vs {other.stage_mode} NVTX stage ranges); {fix}"
        )
    if first.gpu_lost != other.gpu_lost:
        lost = {None: "complete", integrity.LOST_KERNELS: "kernel records lost", integrity.LOST_CALLS: "API calls lost"}
        raise BadInput(
            f"{where}: not equally complete GPU records ({lost.get(first.gpu_lost)} vs {lost.get(other.gpu_lost)}), "
            f"so their GPU numbers per stage cannot be combined; {fix}"
        )
    if first.stage_mode != DSOCR and first_stages != other_stages:
        only = sorted(first_stages ^ other_stages)
        shown = ", ".join(only[:3]) + (f" and {len(only) - 3} more" if len(only) > 3 else "")
        raise BadInput(f"{where}: different top-level stage ranges (not in both: {shown}); {fix}")


def check_same_nesting(first: TraceResult, other_file: str, other: StageTables) -> None:
    """BadInput when one trace has vision inside prefill and the other beside it (two different programs)."""
    a, b = first.stages.nesting, other.nesting
    if a is None or b is None or a.exclusive == b.exclusive:
        return
    nested, beside = (first.info.file, other_file) if a.exclusive else (other_file, first.info.file)
    raise BadInput(
        f"{first.info.file} and {other_file}: {nested} ran vision inside prefill (the checkpoint's own code), "
        f"{beside} beside it (dsocr's replica); {NOT_ONE_STUDY_FIX}"
    )


def check_against(reference: TraceResult, given: str, other: TraceResult) -> None:
    """The checks of :func:`~dsocr.analyze.pipeline.analyze_trace` with a ``reference``, on a finished result
    (the Dask path)."""
    check_same_gpus(reference.info, given, other.info.gpus)
    check_same_study(reference.info, other.info, stage_names(reference.stages), stage_names(other.stages))
    check_same_nesting(reference, given, other.stages)
