"""The report's view model: plain attrs data that the HTML report, the plots, the summary and
``dsocr diff`` render.

It is filled from the analysis result (:mod:`dsocr.report.adapt`); every field a template
shows is here, so templates never compute. Times are in ns, rates in per-second units,
fractions in 0..1. ``None`` means "not measured / not known", which the templates show as
"n/a" (a section with no data at all says so in one line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from dsocr.analyze.repeats import CV_LIMIT as REPEAT_LIMIT


@attrs.frozen
class Stat:
    """One metric over the passes: the per-pass values, their mean, stddev and CV."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float | int]) -> Stat:
        """A stat from per-pass values (one value: a single pass, spread unknown)."""
        return cls(tuple(float(v) for v in values))

    @classmethod
    def summary(cls, mean: float, stddev: float | None, n: int) -> Stat:
        """A stat known only by its mean and stddev (``n`` passes); values are reconstructed.

        The reconstruction (mean +/- stddev alternately) has exactly the given mean and sample
        stddev for ``n`` >= 2, so diff and the spread plot treat it like measured passes.
        """
        if n <= 1 or stddev is None:
            return cls((float(mean),))
        half = n // 2
        if n % 2 == 0:
            d = stddev * math.sqrt((n - 1) / n)
            return cls(tuple([mean - d] * half + [mean + d] * half))
        # odd n: the mean itself, then pairs at mean +/- stddev
        return cls(tuple([float(mean)] + [mean - stddev] * half + [mean + stddev] * half))

    @property
    def n(self) -> int:
        """Number of passes."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Arithmetic mean over passes."""
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def stddev(self) -> float | None:
        """Sample standard deviation (n-1); ``None`` with a single pass (spread unknown)."""
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def sem(self) -> float | None:
        """Standard error of the mean (stddev / sqrt(n)): the spread of the aggregate."""
        sd = self.stddev
        return None if sd is None else sd / math.sqrt(self.n)

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (stddev / mean); ``None`` when unknown or mean is 0."""
        sd = self.stddev
        if sd is None or self.mean == 0:
            return None
        return sd / abs(self.mean)

    @property
    def sem_rel(self) -> float | None:
        """Standard error of the mean relative to the mean (cv / sqrt(n)); ``None`` when unknown."""
        cv = self.cv
        return None if cv is None else cv / math.sqrt(self.n)

    @property
    def max_dev(self) -> float | None:
        """The largest deviation of one pass from the mean, relative to the mean; ``None`` when unknown."""
        if self.n < 2 or self.mean == 0:
            return None
        m = self.mean
        return max(abs(v - m) for v in self.values) / abs(m)

    @property
    def within_limit(self) -> bool | None:
        """The repeat verdict: every pass within +/-10% of the mean (analyze.repeats); ``None`` with one pass."""
        d = self.max_dev
        return None if d is None else d <= REPEAT_LIMIT


@attrs.frozen
class Identity:
    """Who and what was measured (all optional: a foreign trace knows little)."""

    trace_files: tuple[str, ...] = ()
    gpu: str | None = None
    driver: str | None = None
    cuda: str | None = None
    nsys_version: str | None = None
    schema_version: str | None = None
    torch: str | None = None
    model_source: str | None = None
    random_weights: bool | None = None
    dtype: str | None = None
    mode: str | None = None
    pages: int | None = None
    repeats: int | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    created: str | None = None
    dsocr_version: str | None = None
    workload: str | None = None  #: the named workload (dsocr-standard-v1, ...) or how a custom one differs
    #: The model code and execution that ran: the replica and its variants (experts, attention), or the
    #: checkpoint's own code and generate (timing.json's ``model``).
    model_code: str | None = None


@attrs.frozen
class StageView:
    """One stage (``vision``, ``prefill``, ``decode``, ...) over the passes."""

    name: str
    range_ns: Stat  #: profiled NVTX range (CPU) time
    gpu_busy_ns: Stat  #: union of kernel/copy intervals inside the range
    kernels: Stat
    unprofiled_ns: Stat | None = None  #: the same stage timed without nsys (CUDA events), over every unprofiled run
    profiled_ns: Stat | None = None  #: the stage timed the same way (CUDA events) inside the profiled run
    launches: Stat | None = None  #: CUDA launch API calls
    syncs: Stat | None = None  #: host waits on the device
    d2h_copies: Stat | None = None
    tokens: int | None = None  #: tokens produced (decode) or processed (prefill)
    flops: float | None = None  #: analytic FLOPs of one pass
    bytes: float | None = None  #: analytic bytes moved in one pass
    predicted_ns: float | None = None  #: roofline-predicted time of one pass
    #: calibrated prediction of one pass (its primitives timed alone, calibration.json); None without one
    calibrated_ns: float | None = None
    mfu_busy: Stat | None = None  #: MFU against GPU busy time
    mfu_wall: Stat | None = None  #: MFU against the range (wall) time
    mbu_busy: Stat | None = None  #: memory-bandwidth utilization against GPU busy time
    #: Each pass's own MFU (FLOPs of a pass / (peak x that pass's time)): the repeat-spread table's rows;
    #: ``mfu_busy``/``mfu_wall`` are the ratio of means with these passes' spread.
    mfu_busy_passes: Stat | None = None
    mfu_wall_passes: Stat | None = None
    depth: int = 0  #: 0 for top stages, 1 for vision parts
    has_gpu: bool = True  #: False when the trace recorded no CUDA activity (busy/idle unknown)
    #: Unprofiled runs that timed this stage (``timing-baseline*.json``).
    baseline_runs: int = 0
    #: Host drift between those runs: (largest - smallest run mean) / mean of the run means; None below 2 runs.
    baseline_drift: float | None = None
    #: Where vision ran inside this stage (prefill of the checkpoint's own code): the range and GPU busy time
    #: with vision; the fields above are then the stage's own (exclusive) figures. None otherwise.
    inclusive_range_ns: Stat | None = None
    inclusive_gpu_busy_ns: Stat | None = None
    #: Each unprofiled run's mean time of this stage per pass, as (where it ran: ``before``/``after``/...,
    #: ns), in execution order; empty without a baseline.
    unprofiled_runs: tuple[tuple[str, float], ...] = ()

    @property
    def spread(self) -> tuple[tuple[str, Stat, str], ...]:
        """(metric, its per-pass stat, format kind) for the repeat-spread table: range and GPU busy time, MFU."""
        rows: list[tuple[str, Stat | None, str]] = [
            ("range time", self.range_ns, "ms"),
            ("GPU busy", self.gpu_busy_ns if self.has_gpu else None, "ms"),
            ("MFU busy", self.mfu_busy_passes, "pct"),
            ("MFU wall", self.mfu_wall_passes, "pct"),
        ]
        return tuple((name, stat, kind) for name, stat, kind in rows if stat is not None and stat.values)

    @property
    def idle_frac(self) -> Stat | None:
        """Fraction of the range during which the GPU did nothing (per pass); ``None`` without CUDA data."""
        if not self.has_gpu:
            return None
        pairs = zip(self.range_ns.values, self.gpu_busy_ns.values, strict=False)
        return Stat.of([max(0.0, 1.0 - b / r) if r > 0 else 0.0 for r, b in pairs])

    @property
    def tokens_per_s(self) -> Stat | None:
        """Tokens per second of range time, per pass."""
        if not self.tokens:
            return None
        return Stat.of([self.tokens / (r / 1e9) if r > 0 else 0.0 for r in self.range_ns.values])

    def per_token(self, stat: Stat | None) -> float | None:
        """Mean of ``stat`` divided by the stage's tokens (``None`` if either is unknown)."""
        if stat is None or not self.tokens:
            return None
        return stat.mean / self.tokens

    @property
    def measured_over_predicted(self) -> float | None:
        """Mean GPU busy time over the roofline-predicted time."""
        if not self.predicted_ns:
            return None
        return self.gpu_busy_ns.mean / self.predicted_ns

    @property
    def measured_over_calibrated(self) -> float | None:
        """Mean GPU busy time over the calibrated prediction (its kernels timed alone)."""
        if not self.calibrated_ns:
            return None
        return self.gpu_busy_ns.mean / self.calibrated_ns

    @property
    def overhead_frac(self) -> float | None:
        """Profiled over unprofiled time, minus one (nsys's perturbation).

        Like with like where the profiled run's own CUDA-event timing exists (timing.json vs
        timing-baseline.json); otherwise the profiled NVTX range time (inclusive, for a stage that
        held vision) against the unprofiled time.
        """
        if self.unprofiled_ns is None or self.unprofiled_ns.mean <= 0:
            return None
        # a stage holding vision was timed whole (with vision) by the unprofiled run: its inclusive range
        profiled = self.profiled_ns or self.inclusive_range_ns or self.range_ns
        return profiled.mean / self.unprofiled_ns.mean - 1.0

    @property
    def overhead_within_drift(self) -> bool | None:
        """Whether identical unprofiled runs differed by more than the measured overhead (None: unknown).

        When they did, the profiler's cost cannot be separated from the host's own drift.
        """
        overhead = self.overhead_frac
        if overhead is None or self.baseline_drift is None:
            return None
        return self.baseline_drift > abs(overhead)

    @property
    def cv_flag(self) -> bool:
        """Whether the range time varies by more than 10% across passes."""
        cv = self.range_ns.cv
        return cv is not None and cv > 0.10


@attrs.frozen
class KernelView:
    """A kernel (or aten operator) row of a stage's top list."""

    stage: str
    name: str
    total_ns: float
    instances: int
    share: float  #: of the stage's GPU busy time (0..1)
    category: str = "other"
    shapes: str | None = None  #: operators only: input shapes
    #: operators only, with op_memory.json: the allocator's bytes and allocations of the operator in the stage
    alloc_bytes: int | None = None
    allocations: int | None = None


@attrs.frozen
class DecodeStep:
    """One decode step."""

    step: int
    range_ns: float
    gpu_busy_ns: float | None = None
    context_len: int | None = None


@attrs.frozen
class TimelineBin:
    """A slice of the trace's time axis and how busy the GPU was in it."""

    start_ns: float
    end_ns: float
    busy_frac: float
    stage: str | None = None


@attrs.frozen
class RooflinePoint:
    """A stage or module placed on the roofline."""

    label: str
    kind: str  #: ``stage`` or ``module``
    intensity: float  #: FLOP per byte
    achieved_flops: float  #: FLOP/s over GPU busy time


@attrs.frozen
class Peaks:
    """The peak figures MFU/MBU were computed against."""

    tflops: float
    tbps: float
    source: str  #: e.g. "table: NVIDIA H100 80GB HBM3" or "--peak-tflops"


@attrs.frozen
class MemoryView:
    """Memory facts (any may be unknown)."""

    weight_footprint_bytes: float | None = None
    kv_cache_bytes: float | None = None
    peak_allocated_by_stage: tuple[tuple[str, float], ...] = ()
    copies: tuple[tuple[str, int | None, float], ...] = ()  #: (direction, count per pass, bytes per pass)


@attrs.frozen
class IdleGap:
    """A stretch of GPU idle time: a true gap between GPU operations, or a stage instance's idle total."""

    stage: str
    start_ns: float  #: from the first stage instance
    duration_ns: float
    kind: str = "instance"  #: ``gap`` (between two GPU operations) or ``instance`` (idle time inside one range)


@attrs.frozen
class Table:
    """A generic table for sections the view does not model field by field."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@attrs.frozen
class OpMemoryView:
    """op_memory.json (``dsocr capture --op-memory``): per stage its bytes and peak, its top operators."""

    device: str
    measures: str
    stages: tuple[dict[str, Any], ...]  #: analysis.json ``op_memory.stages`` rows
    operators: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]  #: (stage, its top rows) in stage order


@attrs.frozen
class ReportView:
    """Everything the HTML report, summary and diff show."""

    identity: Identity
    stages: tuple[StageView, ...]
    kernels: tuple[KernelView, ...] = ()
    operators: tuple[KernelView, ...] = ()
    categories: tuple[tuple[str, str, float], ...] = ()  #: (stage, category, ns)
    decode_steps: tuple[DecodeStep, ...] = ()
    timeline: tuple[TimelineBin, ...] = ()
    roofline: tuple[RooflinePoint, ...] = ()
    peaks: Peaks | None = None
    model_mfu: Stat | None = None
    memory: MemoryView | None = None
    op_memory: OpMemoryView | None = None
    #: Without op_memory.json in a run directory: how to get it (None for a bare trace)
    op_memory_note: str | None = None
    idle_gaps: tuple[IdleGap, ...] = ()
    assumptions: tuple[tuple[str, str], ...] = ()
    pages: Table | None = None
    caveats: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  #: analyzer warnings worth showing
    #: Where each unprofiled run ran relative to the profiled one (``before``/``after``, execution order;
    #: ``unknown`` where the manifest does not say); empty without a baseline.
    baseline_positions: tuple[str, ...] = ()
    #: Why there is no analytic model (no workload, ...); ``None`` when there is one or no reason is known.
    analytic_reason: str | None = None
    #: Said where vision ran inside prefill (its stage row is then prefill's own work; None otherwise).
    nesting_note: str | None = None
    has_gpu: bool = True  #: False when the trace recorded no CUDA activity, or lost the records that tie it to stages
    #: The analyzer's warnings, shown first in every report file (broken or partial traces, unknown GPU, ...).
    warnings: tuple[str, ...] = ()
    #: What a broken trace lost (``kernels``, ``api_calls``: no GPU numbers per stage); None otherwise.
    gpu_lost: str | None = None
    #: Per module (``--module-ranges`` captures): measured GPU time beside the analytic and calibrated
    #: prediction, calls, the memory estimate; and the kernel categories inside each module. None without.
    modules: Table | None = None
    module_categories: Table | None = None
    #: How much of the GPU busy time the module ranges cover, and how the module table is read.
    modules_note: str | None = None
    #: A data-parallel trace (several workers): (title, table) per-device tables; empty otherwise.
    devices: tuple[tuple[str, Table], ...] = ()

    def stage(self, name: str) -> StageView | None:
        """The stage called ``name``, or ``None``."""
        return next((s for s in self.stages if s.name == name), None)

    @property
    def top_stages(self) -> tuple[StageView, ...]:
        """The depth-0 stages (their times do not overlap: where vision ran inside prefill, prefill's are its own)."""
        return tuple(s for s in self.stages if s.depth == 0)

    @property
    def baseline_runs(self) -> int:
        """How many unprofiled runs the unprofiled times average."""
        return len(self.baseline_positions)

    @property
    def overhead_hidden_by_drift(self) -> tuple[StageView, ...]:
        """Stages whose unprofiled runs differed by more than the measured overhead."""
        return tuple(s for s in self.stages if s.overhead_within_drift)

    @property
    def passes(self) -> int:
        """Number of passes (the most any stage has)."""
        return max((s.range_ns.n for s in self.stages), default=0)
