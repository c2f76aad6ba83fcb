"""The one place ``dsocr whatif report`` (and the advice's measured gains) read a run directory: its manifest,
its timing files and, where the run was analyzed, its ``analysis.json`` (docs/whatif.md).

It reads them through their typed documents (:class:`~dsocr.contract.run_manifest.RunManifest`,
:class:`~dsocr.contract.run_timing.RunTiming`, :class:`~dsocr.analyze.analysis_doc.AnalysisDocument`), the
same reading path as ``dsocr analyze`` and ``dsocr diff``, and keeps what the comparison needs in the attrs
types below; nothing else in the what-if code reads a run directory.

Pass times come from the unprofiled runs (``timing-baseline*.json``, CUDA events); a run without any uses
its profiled ``timing.json`` and says so. A pass is one ``repeat``: a stage's time in a pass is the sum of
its records in that repeat (a batched record, ``batch`` B, timed one forward over B pages: counted once).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs

from dsocr.analyze.analysis_doc import AnalysisDocument
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.contract.run_manifest import read_manifest
from dsocr.contract.run_timing import RunTiming, TimingRecord, read_timing
from dsocr.contract.rundocs import read_doc
from dsocr.contract.whatif_index import DEFAULTS

#: The stages a what-if compares, in order; ``end to end`` is the whole pass (the ``repeat`` record).
STAGES: Final = ("vision", "prefill", "decode")
END_TO_END: Final = "end to end"
#: The one ``trace`` entry of an analysis whose trace holds no GPU activity (a CPU capture).
NO_GPU: Final = "no GPU traced"
_PASS_RECORD: Final = "repeat"


@attrs.frozen
class Spread:
    """Per-pass values of one quantity: mean and sample standard deviation (None with one pass)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        """How many passes."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """The mean (NaN with no pass)."""
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def sd(self) -> float | None:
        """The sample standard deviation; None with fewer than two passes."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@attrs.frozen
class StageTiming:
    """One stage (or ``end to end``) of a run: its time per pass and its largest peak of allocated memory."""

    stage: str
    ms: Spread
    peak_bytes: int | None
    tokens_per_pass: float | None  #: the tokens its records report per pass (decode: generated tokens)


@attrs.frozen
class TraceFigures:
    """What a trace analysis (``analysis.json`` in the run directory) adds for one stage."""

    gpu_busy_ms_per_pass: float | None
    launches_per_step: float | None
    syncs_per_step: float | None


@attrs.frozen
class PageShape:
    """One page as the worker saw it: its crop grid."""

    grid: tuple[int, int]


@attrs.frozen
class RunData:
    """What the what-if report needs from one run directory."""

    path: Path
    gpu: str | None
    device: str
    pages: int
    repeats: int
    mode: str
    prompt_tokens: int
    max_new_tokens: int
    execution: tuple[tuple[str, str], ...]  #: timing.json's ``model.execution`` with the defaults filled in
    stages: tuple[StageTiming, ...]
    output_tokens_per_pass: float | None
    unprofiled: bool  #: the times come from unprofiled runs (False: the profiled timing.json, said so)
    clock: str = "cuda-event"  #: timing.json's ``clock`` (``perf-counter`` on the CPU)
    weights: str | None = None  #: timing.json's ``model.weights`` (``seeded random (seed 0)``, ...)
    trace: tuple[tuple[str, TraceFigures], ...] = ()  #: per stage, where an analysis exists
    page_shapes: tuple[PageShape, ...] = ()
    problems: tuple[str, ...] = ()

    def stage(self, name: str) -> StageTiming | None:
        """The named stage (``end to end`` too)."""
        return next((s for s in self.stages if s.stage == name), None)

    @property
    def gpu_traced(self) -> bool:
        """Whether an analysis exists and its trace holds GPU activity."""
        return bool(self.trace) and self.trace[0][0] != NO_GPU

    def figures(self, stage: str) -> TraceFigures | None:
        """The trace figures of a stage, if analyzed."""
        return dict(self.trace).get(stage)

    def setting(self, key: str) -> str | None:
        """One execution setting (``moe``, ``decode``, ``batch``, ...)."""
        return dict(self.execution).get(key)

    @property
    def batch(self) -> int:
        """Pages per forward (1 unless the execution says otherwise)."""
        value = self.setting("batch")
        return int(value) if value and value.isdigit() else 1


def timing_files(run_dir: Path) -> tuple[list[Path], bool]:
    """The run's unprofiled timing files in run order (and True), else its profiled one (and False)."""
    numbered = [p for p in run_dir.glob(rundir.TIMING_BASELINE_GLOB) if p.stem.rsplit("-", 1)[1].isdigit()]
    numbered.sort(key=lambda p: int(p.stem.rsplit("-", 1)[1]))  # per-worker files (-w0) are not runs
    plain = run_dir / rundir.TIMING_BASELINE
    files = ([plain] if plain.is_file() else []) + numbered
    if files:
        return files, True
    return ([run_dir / rundir.TIMING] if (run_dir / rundir.TIMING).is_file() else []), False


def _passes(records: Sequence[TimingRecord], stage: str) -> list[float]:
    by_repeat: dict[int, float] = {}
    for r in records:
        if r.stage == stage and r.ms is not None:
            key = r.repeat or 0
            by_repeat[key] = by_repeat.get(key, 0.0) + float(r.ms)
    return [by_repeat[k] for k in sorted(by_repeat)]


def _tokens(records: Sequence[TimingRecord], stage: str) -> float | None:
    rows = [r for r in records if r.stage == stage and r.tokens is not None]
    repeats = {r.repeat or 0 for r in rows}
    return sum(float(r.tokens or 0) for r in rows) / len(repeats) if repeats else None


def _peak(records: Sequence[TimingRecord], stage: str) -> int | None:
    peaks = [r.peak_allocated_bytes for r in records if r.stage == stage and r.peak_allocated_bytes]
    return max(peaks) if peaks else None


def _trace(run_dir: Path, passes: int) -> tuple[tuple[str, TraceFigures], ...]:
    path = run_dir / rundir.ANALYSIS_JSON
    data, _ = read_doc(path)
    doc = AnalysisDocument.from_json(data, str(path)) if data is not None else None
    if doc is None or not doc.has("stages"):
        return ()
    n = int(doc.repeats_value("passes") or passes or 1)
    if not any((row.get("kernels") or 0) > 0 or (row.get("gpu_busy_ns") or 0) > 0 for row in doc.stages):
        return ((NO_GPU, TraceFigures(None, None, None)),)  # a CPU trace: no GPU figure is a measurement
    out = []
    for row in doc.stages:
        name = str(row.get("stage"))
        if name not in STAGES and name != _PASS_RECORD:
            continue
        busy = row.get("gpu_busy_ns")
        out.append(
            (
                END_TO_END if name == _PASS_RECORD else name,
                TraceFigures(
                    None if busy is None else float(busy) / n / 1e6,
                    None if row.get("launches_per_step") is None else float(row["launches_per_step"]),
                    None if row.get("syncs_per_step") is None else float(row["syncs_per_step"]),
                ),
            )
        )
    return tuple(out)


def read_run(run_dir: Path) -> RunData:
    """Read one run directory; InputNotFound/BadInput (one line) when it is not a usable capture."""
    if not run_dir.is_dir():
        raise InputNotFound(f"{run_dir}: no such run directory; pass directories made by `dsocr whatif run`")
    manifest, problem = read_manifest(run_dir / rundir.MANIFEST)
    if problem is not None:
        raise BadInput(f"{problem}; capture that variant again")
    files, unprofiled = timing_files(run_dir)
    if not files:
        raise BadInput(f"{run_dir}: no timing file (timing-baseline*.json or timing.json); capture it again")
    records: list[TimingRecord] = []
    problems: list[str] = []
    first: RunTiming | None = None
    offset = 0
    for f in files:
        doc, bad = read_timing(f)
        if doc is None:
            problems.append(bad or f"{f}: missing")
            continue
        if doc.interrupted:
            problems.append(f"{f.name}: the run was interrupted; its passes are left out")
            continue
        first = first or doc
        reps = {r.repeat or 0 for r in doc.records}
        records.extend(r.with_(repeat=(r.repeat or 0) + offset) for r in doc.records)
        offset += max(reps, default=-1) + 1
    if first is None:
        raise BadInput(f"{run_dir}: no usable timing file ({'; '.join(problems)}); capture it again")
    cfg = first.config or {}
    run_execution = first.execution
    execution = {**DEFAULTS, **{k: str(v) for k, v in (run_execution.to_json() if run_execution else {}).items()}}
    if str(cfg.get("dtype", "auto")) != "auto":
        execution.setdefault("dtype", str(cfg["dtype"]))
    env = first.environment or {}
    stages = []
    for name in (*STAGES, END_TO_END):
        stage = _PASS_RECORD if name == END_TO_END else name
        values = _passes(records, stage)
        if values:
            stages.append(StageTiming(name, Spread(tuple(values)), _peak(records, stage), _tokens(records, stage)))
    page_tokens = _tokens(records, "page")
    gpu = (manifest.gpu if manifest is not None else None) or env.get("device_name")
    passes = len(_passes(records, _PASS_RECORD))
    weights = first.model.weights if first.model is not None else None
    return RunData(
        path=run_dir,
        gpu=None if gpu is None else str(gpu),
        device=str(cfg.get("device", "cuda")),
        pages=len(first.pages),
        repeats=int(cfg.get("repeats") or 0),
        mode=str(cfg.get("mode", "gundam")),
        prompt_tokens=int(cfg.get("prompt_tokens") or 0),
        max_new_tokens=int(cfg.get("max_new_tokens") or 0),
        execution=tuple(sorted(execution.items())),
        stages=tuple(stages),
        output_tokens_per_pass=page_tokens,
        unprofiled=unprofiled,
        clock=first.clock or "cuda-event",
        weights=weights,
        trace=_trace(run_dir, passes),
        page_shapes=tuple(PageShape(p.grid) for p in first.pages if p.grid),
        problems=tuple(problems),
    )
