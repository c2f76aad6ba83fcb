"""The stakeholder summary: the largest cost centers and what to do next, from measured signals.

Recommendations come from one declarative table, :data:`RULES`: a rule names a metric of a
stage, a comparison and a threshold; when the measured value crosses it, its sentence is
rendered with that value (and the threshold). Nothing is canned: every number in a sentence
is an :class:`Evidence` that names where it came from (``stage:decode:idle_frac``), and
:func:`resolve` recomputes it from the report data, which the tests use to trace every number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from dsocr.report.view import ReportView, StageView

if TYPE_CHECKING:
    from dsocr.report.advice import Measurements

IDLE = "idle"
STAGE_PREFIX = "stage-"  #: cost centers of a trace without GPU activity are its stages

#: Plain-language names of the cost centers (kernel categories and GPU idle time).
COST_LABELS: dict[str, str] = {
    IDLE: "GPU idle time (the GPU waiting for the CPU to send work)",
    "gemm": "matrix multiplications (GEMM)",
    "attention": "attention",
    "moe_routing": "MoE routing (sorting and gathering tokens for the experts)",
    "normalization": "normalization layers",
    "elementwise": "elementwise operations (additions, activations)",
    "reduction": "reductions (softmax, sums)",
    "copy": "memory copies on the GPU",
    "memcpy": "memory copies",
    "memset": "memory fills",
    "communication": "GPU-to-GPU communication",
    "other": "other GPU kernels",
}

#: What a broken trace lost (``ReportView.gpu_lost``), in words.
LOST_RECORDS: dict[str, str] = {"kernels": "kernel records", "api_calls": "CUDA API calls"}

#: Glosses for the jargon the summary may use (shown only for terms that appear).
GLOSSARY: dict[str, str] = {
    "MFU": "model FLOPs utilization: the share of the GPU's peak arithmetic rate the model actually achieves",
    "GEMM": "general matrix multiplication, the bulk of a transformer's arithmetic",
    "kernel launch": "one request from the CPU asking the GPU to run a piece of work",
    "MoE": "mixture of experts: each token is sent to a few of many small feed-forward networks",
    "CUDA graph": "a recorded sequence of GPU work replayed with one launch instead of hundreds",
    "roofline": "the fastest a piece of work could run given the GPU's peak arithmetic rate and memory bandwidth",
    "CV": "coefficient of variation: standard deviation divided by the mean",
    "standard error": "how much the mean of the passes itself is uncertain: the standard deviation of one pass "
    "divided by the square root of the number of passes",
    "prefill": "the pass over the whole prompt (image tokens and text) that produces the first output token",
    "decode": "the loop that generates the remaining output tokens one at a time",
    "device-to-host copy": "data sent from GPU memory back to the CPU, which makes the CPU wait",
    "kernel": "one piece of work the GPU runs (a matrix multiplication, an addition over a tensor)",
    "host": "the CPU, which runs the Python code and sends the GPU its work",
    "drift": "how much identical unprofiled runs differed from each other (run to run noise of the machine)",
    "token": "a piece of text or of the image the model reads or writes (about a word, or an image patch)",
    "gundam mode": "DeepSeek-OCR's setting that cuts each page into several crops plus an overview image",
    "replica": "dsocr's own copy of the model code, with the same layers and shapes as the checkpoint's",
    "CUDA events": "timestamps recorded on the GPU itself, used to time the runs without the profiler",
    "analytic model": "dsocr's count of the FLOPs and bytes each stage needs, from the model's shapes",
    "sam, clip, projector": "parts of vision: two image encoders and the layer that feeds their output to "
    "the language model",
    "decode_step": "one step of decode (one generated token)",
    "profiler": "the tool (Nsight Systems) that records every CPU and GPU event of a run; it slows the run down, "
    "so the headline times come from runs without it",
    "unprofiled": "timed without the profiler (the times to quote)",
    "FLOPs": "floating-point operations, the model's arithmetic; TFLOP/s: trillions of them per second",
    "upper bound": "the most a change could give by this run's numbers; the real gain is at most this, often less",
    "what-if": "a separate pair of runs of the same pages, without and with one change, timed without the profiler",
    "ms": "milliseconds (thousandths of a second)",
    "vision": "the first stage: the image encoders that turn each page image into tokens for the language model",
    "trace": "the profiler's record of a run: every GPU kernel and CPU call with its start and end",
    "wall time": "the elapsed time, as a clock on the wall measures it (not only the time the GPU was busy)",
    "memory bandwidth": "how many bytes per second the GPU's memory can deliver to its arithmetic units",
    "serving engine": "software that runs a model for many requests at once and keeps the GPU fed (vLLM, SGLang)",
}

#: The words that bring in a glossary entry (whole words), where they are not the term itself.
GLOSSARY_TRIGGERS: dict[str, tuple[str, ...]] = {
    "kernel": ("kernel", "kernels"),
    "kernel launch": ("kernel launch", "kernel launches"),
    "host": ("host", "host-bound"),
    "token": ("token", "tokens"),
    "sam, clip, projector": ("sam", "clip", "projector"),
    "profiler": ("profiler", "profiled", "profiling"),
    "FLOPs": ("FLOPs", "TFLOP/s"),
    "trace": ("trace", "traced"),
}


def glossed(words: str) -> tuple[tuple[str, str], ...]:
    """The glossary entries whose term (or trigger words) the text uses, as whole words."""
    return tuple(
        (term, meaning)
        for term, meaning in GLOSSARY.items()
        if any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", words) for w in GLOSSARY_TRIGGERS.get(term, (term,)))
    )


def pct(x: float) -> str:
    """0.9651 -> ``96.5%``; below 1%: two decimals (0.0053 -> ``0.53%``)."""
    return f"{100 * x:.2f}%" if 0 < abs(x) < 0.01 else f"{100 * x:.1f}%"


def count(x: float) -> str:
    """A count: ``905`` or ``0.5`` (one decimal below 10)."""
    return f"{x:,.1f}" if abs(x) < 10 and x != round(x) else f"{x:,.0f}"


def times(x: float) -> str:
    """A ratio: ``3.2x``."""
    return f"{x:.1f}x"


def ms(ns: float) -> str:
    """ns -> ``4,596 ms`` / ``12.3 ms``."""
    v = ns / 1e6
    return f"{v:,.0f} ms" if v >= 100 else f"{v:,.3g} ms"


def gain(x: float) -> str:
    """A speedup bound: ``3.1x``, with two decimals below 1.1x (``1.03x``, never a ``1.0x`` that reads as none)."""
    return f"{x:.2f}x" if x < 1.1 else f"{x:.1f}x"


def rate(x: float) -> str:
    """A rate with one decimal: ``23.9``."""
    return f"{x:,.1f}"


FORMATS: dict[str, Callable[[float], str]] = {
    "pct": pct,
    "count": count,
    "times": times,
    "ms": ms,
    "rate": rate,
    "gain": gain,
}

#: The same formats with a given number of decimals (to tell a value from its threshold).
_PRECISE: dict[str, Callable[[float, int], str]] = {
    "pct": lambda x, d: f"{100 * x:.{d}f}%",
    "count": lambda x, d: f"{x:,.{d}f}",
    "times": lambda x, d: f"{x:.{d}f}x",
    "ms": lambda ns, d: f"{ns / 1e6:,.{d}f} ms",
    "rate": lambda x, d: f"{x:,.{d}f}",
    "gain": lambda x, d: f"{x:.{d}f}x",
}


def shown_apart(value: float, threshold: float, fmt: str) -> str:
    """``value`` formatted as ``fmt``, with as many more decimals as it takes not to read like
    ``threshold`` (3.049 against 3.0 -> ``3.05x``, never ``3.0x (more than 3.0x)``)."""
    shown = FORMATS[fmt](value)
    if value == threshold or shown != FORMATS[fmt](threshold):
        return shown
    for d in range(1, 9):
        a, b = _PRECISE[fmt](value, d), _PRECISE[fmt](threshold, d)
        if a != b:
            return a
    return shown


#: The stage limits (:func:`classify`): one per stage, computed once, used by every rule and table.
HOST = "host-bound"  #: the GPU idles most of the stage's time, waiting for the CPU to send work
KERNEL = "kernel-bound"  #: the GPU is mostly busy, but its kernels run far from the roofline
MEMORY = "memory-bound"  #: the GPU is mostly busy, near the roofline, limited by memory bandwidth
COMPUTE = "compute-bound"  #: the GPU is mostly busy, near the roofline, limited by its arithmetic rate
GPU = "GPU-bound"  #: the GPU is mostly busy (no analytic model to say more)
GPU_WORK = (KERNEL, MEMORY, COMPUTE, GPU)  #: the limits where the GPU work itself sets the stage's time
#: A stage whose GPU idles more than this share of its time is host-bound (the launch-bound rule's threshold too).
IDLE_LIMIT = 0.5
#: A stage mostly busy whose GPU time exceeds this multiple of the roofline prediction is kernel-bound.
ROOFLINE_LIMIT = 3.0

#: What each limit means, in plain words (summary.md's list of stages).
LIMIT_WORDS: dict[str, str] = {
    HOST: "the GPU waits for the CPU most of the time",
    KERNEL: "the GPU is mostly busy, but its kernels run far from the hardware limit",
    MEMORY: "the GPU is mostly busy, limited by memory bandwidth",
    COMPUTE: "the GPU is mostly busy, limited by its arithmetic rate",
    GPU: "the GPU is mostly busy",
}


#: What a roofline bound is limited by, in words.
BOUND_BY: dict[str, str] = {MEMORY: "memory bandwidth", COMPUTE: "its arithmetic rate"}


def unprofiled_own(view: ReportView, stage: StageView) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """The stage's unprofiled time of a pass (mean, and each unprofiled run's mean), its own work only.

    Where vision ran inside prefill the unprofiled runs timed prefill whole (with vision): its own time is
    prefill's minus vision's, like the profiled figures. ``(None, ())`` without unprofiled timing.
    """
    if stage.unprofiled_ns is None:
        return None, ()
    mean, runs = stage.unprofiled_ns.mean, stage.unprofiled_runs
    guest = view.stage("vision") if stage.inclusive_range_ns is not None else None
    if guest is not None and guest.unprofiled_ns is not None:
        inner = dict(guest.unprofiled_runs)
        mean -= guest.unprofiled_ns.mean
        runs = tuple((w, ns - inner[w]) for w, ns in runs if w in inner)
    return mean, runs


def idle_share(view: ReportView, stage: StageView) -> tuple[float | None, bool]:
    """The share of the stage's time the GPU was idle, and whether it is of the unprofiled time.

    Unprofiled where the run has unprofiled timing (1 - GPU busy time from the trace / unprofiled time),
    otherwise of the profiled range time; ``None`` without CUDA data.
    """
    if not stage.has_gpu:
        return None, False
    wall, _ = unprofiled_own(view, stage)
    if wall is not None and wall > 0:
        return max(0.0, 1.0 - stage.gpu_busy_ns.mean / wall), True
    idle = stage.idle_frac
    return (None if idle is None else idle.mean), False


def roofline_bound(view: ReportView, stage: StageView) -> str | None:
    """``memory-bound`` or ``compute-bound`` by the analytic roofline (bytes / bandwidth vs FLOPs / peak)."""
    if view.peaks is None or not stage.flops or not stage.bytes:
        return None
    by_memory = stage.bytes / view.peaks.tbps >= stage.flops / view.peaks.tflops
    return MEMORY if by_memory else COMPUTE


def limit(view: ReportView, stage: StageView) -> str | None:
    """What limits the stage: host-bound (GPU idle > 50%), else kernel-bound (> 3x the roofline),
    else the roofline's memory- or compute-bound (GPU-bound without a model); ``None`` without GPU data."""
    idle, _ = idle_share(view, stage)
    if idle is None:
        return None
    if idle > IDLE_LIMIT:
        return HOST
    ratio = stage.measured_over_predicted
    if ratio is not None and ratio > ROOFLINE_LIMIT:
        return KERNEL
    return roofline_bound(view, stage) or GPU


def classify(view: ReportView) -> dict[str, str]:
    """Every stage's limit (:func:`limit`), computed once for the summary's rules and lists."""
    return {s.name: lim for s in view.stages if (lim := limit(view, s)) is not None}


def _wall(view: ReportView, stage: StageView) -> float:
    """The stage's own time of a pass: unprofiled where measured, else the profiled range time."""
    un, _ = unprofiled_own(view, stage)
    return un if un is not None and un > 0 else stage.range_ns.mean


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cat_share(category: str) -> Callable[[ReportView, StageView], float | None]:
    def get(view: ReportView, stage: StageView) -> float | None:
        cats = [(c, v) for s, c, v in view.categories if s == stage.name]
        total = sum(v for _, v in cats)
        if total <= 0:
            return None
        return sum(v for c, v in cats if c == category) / total

    return get


def _mean(stat_name: str) -> Callable[[ReportView, StageView], float | None]:
    def get(view: ReportView, stage: StageView) -> float | None:
        stat = getattr(stage, stat_name)
        return None if stat is None else float(stat.mean)

    return get


def _free_bound(share: float | None) -> float | None:
    return None if share is None or not 0 <= share < 1 else 1 / (1 - share)


def _per_token(stat_name: str) -> Callable[[ReportView, StageView], float | None]:
    def get(view: ReportView, stage: StageView) -> float | None:
        return stage.per_token(getattr(stage, stat_name))

    return get


def pass_time(view: ReportView) -> float | None:
    """The time of a pass the pass-level gains divide: unprofiled where measured, else the profiled range time."""
    t = totals(view)
    return t.unprofiled_ns or t.range_ns or None


def _pass_speedup(view: ReportView, saved: float | None) -> float | None:
    """How much faster a pass would be with ``saved`` ns less time, everything else unchanged."""
    total = pass_time(view)
    if total is None or saved is None or not 0 <= saved < total:
        return None
    return total / (total - saved)


def _host_pass(view: ReportView, stage: StageView) -> float | None:
    """A pass's bound if the stage ran at its GPU busy time (its host overhead gone, the other stages unchanged)."""
    return _pass_speedup(view, _wall(view, stage) - stage.gpu_busy_ns.mean) if stage.has_gpu else None


def _gpu_pass(metric: str) -> Callable[[ReportView, StageView], float | None]:
    """A pass's bound if the stage's GPU work ran ``metric`` (a bound on that work) times faster."""

    def get(view: ReportView, stage: StageView) -> float | None:
        bound = METRICS[metric][0](view, stage)
        if bound is None or not bound > 1 or not stage.has_gpu:
            return None
        return _pass_speedup(view, stage.gpu_busy_ns.mean * (1 - 1 / bound))

    return get


#: The stage bounds of the advice (report/advice.py) that also have a pass-level bound ``pass_<bound>``.
GPU_BOUNDS = ("moe_routing_bound", "attention_bound", "measured_over_predicted", "measured_over_calibrated")

#: Stage metrics the rules may test: name -> (getter, format).
METRICS: dict[str, tuple[Callable[[ReportView, StageView], float | None], str]] = {
    # the headline idle share: of the unprofiled time where the run has one (GPU busy time from the trace)
    "idle_frac": (lambda v, s: idle_share(v, s)[0], "pct"),
    "launches_per_token": (_per_token("launches"), "count"),
    "syncs_per_token": (_per_token("syncs"), "count"),
    "d2h_per_token": (_per_token("d2h_copies"), "count"),
    "mfu_busy": (_mean("mfu_busy"), "pct"),
    "cv": (lambda v, s: s.range_ns.cv, "pct"),
    # the repeat verdict: the largest single-pass deviation of the range time from its mean, and the
    # standard error of that mean (both relative to the mean)
    "max_dev": (lambda v, s: s.range_ns.max_dev, "pct"),
    "sem_rel": (lambda v, s: s.range_ns.sem_rel, "pct"),
    "overhead": (lambda v, s: s.overhead_frac, "pct"),
    # the overhead where identical unprofiled runs differed less / more than it / with one unprofiled run
    "overhead_beyond_drift": (lambda v, s: s.overhead_frac if s.overhead_within_drift is False else None, "pct"),
    "overhead_within_drift": (lambda v, s: s.overhead_frac if s.overhead_within_drift else None, "pct"),
    "overhead_drift_unknown": (lambda v, s: s.overhead_frac if s.baseline_drift is None else None, "pct"),
    "baseline_drift": (lambda v, s: s.baseline_drift, "pct"),
    # the profiled time over the unprofiled time (1 + overhead): "2.7x slower"
    "slowdown": (lambda v, s: None if s.overhead_frac is None else 1 + s.overhead_frac, "times"),
    # the most removing all CPU overhead could speed the stage up: its wall time (unprofiled where measured)
    # over its GPU busy time, and both per token
    "speedup_bound": (lambda v, s: _ratio(_wall(v, s), s.gpu_busy_ns.mean if s.has_gpu else None), "times"),
    "busy_per_step": (lambda v, s: _ratio(s.gpu_busy_ns.mean if s.has_gpu else None, s.tokens), "ms"),
    "wall_per_step": (lambda v, s: _ratio(_wall(v, s), s.tokens), "ms"),
    "measured_over_predicted": (lambda v, s: s.measured_over_predicted, "times"),
    "measured_over_calibrated": (lambda v, s: s.measured_over_calibrated, "times"),
    # far from the roofline: how far the measured GPU time is from its kernels timed alone (|ratio - 1|)
    "calibrated_gap": (
        lambda v, s: (
            abs(s.measured_over_calibrated - 1)
            if s.measured_over_calibrated is not None and (s.measured_over_predicted or 0) > ROOFLINE_LIMIT
            else None
        ),
        "pct",
    ),
    "share_moe_routing": (_cat_share("moe_routing"), "pct"),
    "share_attention": (_cat_share("attention"), "pct"),
    "share_gemm": (_cat_share("gemm"), "pct"),
    # what making a kernel category free could give its stage's GPU work: 1 / (1 - share) (report/advice.py)
    "moe_routing_bound": (lambda v, s: _free_bound(_cat_share("moe_routing")(v, s)), "times"),
    "attention_bound": (lambda v, s: _free_bound(_cat_share("attention")(v, s)), "times"),
    # the same bounds for a whole pass, the other stages unchanged (Amdahl): pass time over pass time less the saving
    "pass_speedup_bound": (_host_pass, "gain"),
    **{f"pass_{m}": (_gpu_pass(m), "gain") for m in GPU_BOUNDS},
    # the stage's GPU busy time as a share of a pass (what a bound on its GPU work can reach at most)
    "busy_share_of_pass": (lambda v, s: _ratio(s.gpu_busy_ns.mean if s.has_gpu else None, pass_time(v)), "pct"),
}


@attrs.frozen
class Rule:
    """When ``metric`` of ``stage`` (``*``: any stage) compares ``op`` to ``threshold``, say ``text``.

    ``text`` may use ``{stage}``, ``{value}`` and ``{threshold}`` (formatted like the metric).
    """

    id: str
    stage: str
    metric: str
    op: str  #: ``>`` or ``<``
    threshold: float
    text: str
    #: For ``*`` rules firing in several stages: one sentence with ``{stages}`` (``vision (5.0x), sam (5.1x)``)
    #: and ``{threshold}``, instead of one sentence per stage.
    text_many: str | None = None
    #: Further metrics of the stage quoted in the text as ``{<metric>}`` (each an Evidence).
    also: tuple[str, ...] = ()
    #: How ``{stages}`` lists one stage (``{stage}``, ``{value}`` and the ``also`` metrics).
    item: str = "{stage} ({value})"
    #: The stage limits (:func:`classify`) in which the rule may fire; empty: any. Advice about the GPU work
    #: fires only where the GPU work limits the stage, so no bullet contradicts the stage's one classification.
    limits: tuple[str, ...] = ()


#: The decode host-overhead rules (the idle share first, then the per-token counts), joined in summary.md as one
#: finding with one bound, :data:`HOST_FINDING`: the counts are evidence of the same overhead, not separate gains.
HOST_RULES: tuple[str, ...] = ("launch-bound", "launches-per-token", "syncs-per-token", "d2h-per-token")
HOST_FINDING = "decode-host-overhead"
#: The rules that are caveats on reading the numbers, not changes to make: summary.md lists them apart.
CAVEATS: tuple[str, ...] = ("noisy", "profiler-overhead", "overhead-drift-unknown", "overhead-within-drift")

#: The recommendation rules, in the order the summary lists them.
RULES: tuple[Rule, ...] = (
    # The four decode host-overhead rules make one finding (:func:`actions` joins them, :data:`HOST_FINDING`):
    # their texts are clauses of it, and one bound (decode's wall time over its GPU busy time) covers them all.
    Rule(
        "launch-bound",
        "decode",
        "idle_frac",
        ">",
        IDLE_LIMIT,
        "the GPU sat idle {value} of decode's {basis} time (above the {threshold} threshold), waiting for the CPU, "
        "which issues the work one small step at a time",
    ),
    Rule(
        "launches-per-token",
        "decode",
        "launches_per_token",
        ">",
        100,
        "{value} kernel launches (above the {threshold} threshold)",
    ),
    Rule(
        "syncs-per-token",
        "decode",
        "syncs_per_token",
        ">",
        0.5,
        "{value} waits for the GPU (above the {threshold} threshold)",
    ),
    Rule(
        "d2h-per-token",
        "decode",
        "d2h_per_token",
        ">",
        0.5,
        "{value} device-to-host copies (above the {threshold} threshold)",
    ),
    Rule(
        "moe-routing",
        "*",
        "share_moe_routing",
        ">",
        0.15,
        "MoE routing takes {value} of the GPU time in {stage} (above the {threshold} threshold); a fused MoE kernel "
        "(routing and grouped expert GEMMs in one) would pay.",
        "MoE routing takes more than {threshold} of the GPU time in {stages}; a fused MoE kernel "
        "(routing and grouped expert GEMMs in one) would pay.",
        limits=GPU_WORK,
    ),
    Rule(
        "sam-attention",
        "sam",
        "share_attention",
        ">",
        0.3,
        "Attention takes {value} of the GPU time in SAM (above the {threshold} threshold); SAM's global layers attend "
        "over the whole image, so a fused flash attention kernel there would pay.",
        limits=GPU_WORK,
    ),
    Rule(
        "low-mfu-prefill",
        "prefill",
        "mfu_busy",
        "<",
        0.3,
        "Prefill reaches {value} MFU while the GPU is busy (below the {threshold} threshold): "
        "batching pages together gives each "
        "weight read more tokens to work on, and fused kernels read and write memory fewer times.",
        limits=GPU_WORK,
    ),
    Rule(
        "low-mfu-vision",
        "vision",
        "mfu_busy",
        "<",
        0.3,
        "The vision encoders reach {value} MFU while the GPU is busy (below the {threshold} "
        "threshold); batching several "
        "pages or crops per forward pass would use the GPU better.",
        limits=GPU_WORK,
    ),
    Rule(
        "far-from-roofline",
        "*",
        "measured_over_predicted",
        ">",
        ROOFLINE_LIMIT,
        "The GPU work of {stage} took {value} longer than the ideal (roofline) time (above the {threshold} "
        "threshold); its kernels are far from the hardware limit, so kernel choice, not hardware, limits it.",
        "The GPU work took longer than the ideal (roofline) time by more than the {threshold} threshold in "
        "{stages}; these kernels are "
        "far from the hardware limit, so kernel choice (fused or better-tuned kernels), not hardware, limits them.",
        limits=(KERNEL,),
    ),
    Rule(
        "kernels-explain",
        "*",
        "calibrated_gap",
        "<",
        0.15,
        "Far from the roofline, yet its kernels timed alone add up to the measured GPU time of {stage} (off by "
        "{value}, below the {threshold} threshold): the time is in the kernels themselves, so faster "
        "kernels (fused, better "
        "tuned), not less overhead, would pay; the module table shows which.",
        "Far from the roofline, yet the kernels timed alone add up to the measured GPU time (off by less than the "
        "{threshold} threshold) in {stages}: the time is in the kernels themselves, so faster "
        "kernels (fused, better tuned), "
        "not less overhead, would pay.",
        limits=(KERNEL,),
    ),
    Rule(
        "composition-gap",
        "*",
        "measured_over_calibrated",
        ">",
        1.3,
        "The GPU work of {stage} took {value} the time of its kernels timed alone (above the {threshold} threshold): "
        "something beyond the kernels the model lists (extra copies, cache misses, contention) costs time there.",
        "The GPU work took more than {threshold} the time of its kernels timed alone in {stages}: something "
        "beyond the kernels the model lists (extra copies, cache misses, contention) costs time there.",
        limits=GPU_WORK,
    ),
    Rule(
        "noisy",
        "*",
        "max_dev",
        ">",
        0.10,
        "A single pass of {stage} strays {value} from the mean of the passes (beyond the ±{threshold} "
        "threshold); the mean itself is known to ±{sem_rel} (standard error): compare runs with care and use "
        "more repeats.",
        "Single passes stray from the mean of the passes beyond the ±{threshold} threshold in: {stages}; compare "
        "runs with care and use more repeats.",
        also=("sem_rel",),
        item="{stage} (by up to {value})",
    ),
    Rule(
        "profiler-overhead",
        "*",
        "overhead_beyond_drift",
        ">",
        0.2,
        "Profiling made {stage} {slowdown} slower (+{value}) than the unprofiled runs (above the {threshold} "
        "threshold; identical unprofiled runs differed by only {baseline_drift}); read its absolute times with that "
        "in mind.",
        "Profiling made these stages slower than the unprofiled runs, beyond the {threshold} threshold and beyond "
        "the drift: {stages}; read their absolute times with that in mind.",
        also=("baseline_drift", "slowdown"),
        item="{stage} {slowdown} slower (+{value}; drift {baseline_drift})",
    ),
    Rule(
        "overhead-drift-unknown",
        "*",
        "overhead_drift_unknown",
        ">",
        0.2,
        "Profiling made {stage} {slowdown} slower (+{value}) than the one unprofiled run (above the {threshold} "
        "threshold); with one "
        "unprofiled run the host's own drift between identical runs is unknown and may be part of it (a capture "
        "with several unprofiled runs, the default of --baseline-runs, measures it).",
        "Profiling made these stages slower than the one unprofiled run, beyond the {threshold} threshold: "
        "{stages}; the "
        "host's own drift between identical runs is unknown and may be part of it (a capture with several "
        "unprofiled runs, the default of --baseline-runs, measures it).",
        also=("slowdown",),
        item="{stage} {slowdown} slower (+{value})",
    ),
    Rule(
        "overhead-within-drift",
        "*",
        "overhead_within_drift",
        ">",
        0.2,
        "Profiling appears to make {stage} {slowdown} slower (+{value}; above the {threshold} threshold), but "
        "identical unprofiled runs "
        "differed by {baseline_drift} among themselves: the overhead cannot be separated from host drift, so "
        "neither number says what nsys costs.",
        "Profiling appears to slow these stages beyond the {threshold} threshold, but identical unprofiled runs "
        "differed among themselves by more still: {stages}; the overhead cannot be separated from host drift there.",
        also=("baseline_drift", "slowdown"),
        item="{stage} ({slowdown} slower, +{value}; drift {baseline_drift})",
    ),
)


@attrs.frozen
class Evidence:
    """A number shown in the summary and where it came from."""

    key: str  #: e.g. ``stage:decode:idle_frac``, ``rule:launch-bound:threshold``, ``cost:idle:share``
    value: float
    shown: str


@attrs.frozen
class Statement:
    """One sentence of the summary and the numbers in it."""

    text: str
    evidence: tuple[Evidence, ...]
    rule: str | None = None
    #: The rules a finding joins (:data:`HOST_FINDING`: the decode host-overhead rules that fired); else empty.
    rules: tuple[str, ...] = ()


@attrs.frozen
class CostCenter:
    """A cost center: a kernel category or GPU idle time, summed over the top stages."""

    key: str
    label: str
    total_ns: float
    share: float  #: of the total time of the top stages
    stage: str  #: the stage that holds most of it (absolute time)
    stage_share: float  #: the share of this cost center's time in that stage


@attrs.frozen
class Summary:
    """Everything summary.md and the top of the report show."""

    headline: Statement
    cost_centers: tuple[tuple[CostCenter, Statement], ...]
    actions: tuple[Statement, ...]
    glossary: tuple[tuple[str, str], ...]
    #: Where vision ran inside prefill: how the stages are counted (the prefill figures are its own work).
    note: str | None = None
    #: What was measured (pages, repeats, tokens, weights, code, GPU) and what a pass is: the first sentence.
    measured: Statement | None = None
    #: The model FLOPs utilization over the unprofiled wall time, and over the GPU busy time beside it.
    mfu: Statement | None = None
    #: Each top stage's one limit (:func:`classify`) and the numbers behind it.
    limits: tuple[Statement, ...] = ()
    #: What the cost centers leave out, and how far the profiler can distort their shares.
    cost_note: Statement | None = None
    #: The lines a stakeholder reads first: the time per page, the main cost, what to fund (:func:`top_lines`).
    top: tuple[Statement, ...] = ()
    #: Below the recommendations where several state a gain: the gains overlap and do not add up.
    gains_note: str | None = None

    @property
    def advice(self) -> tuple[Statement, ...]:
        """The recommendations: the actions that are changes to make (not :data:`CAVEATS`)."""
        return tuple(a for a in self.actions if a.rule not in CAVEATS)

    @property
    def caveats(self) -> tuple[Statement, ...]:
        """The actions that are caveats on reading the numbers (:data:`CAVEATS`), listed apart from the advice."""
        return tuple(a for a in self.actions if a.rule in CAVEATS)


def cost_centers(view: ReportView, top: int = 3) -> tuple[CostCenter, ...]:
    """The ``top`` largest cost centers over the top stages (kernel categories and GPU idle time), by absolute
    time in the profiled trace, each with the stage that holds most of it."""
    stages = {s.name: s for s in view.top_stages}
    total = sum(s.range_ns.mean for s in stages.values())
    if total <= 0:
        return ()
    if not any(s.has_gpu for s in stages.values()):
        # no GPU traced: the stages themselves are the cost centers
        by_time = sorted(stages.values(), key=lambda s: -s.range_ns.mean)
        return tuple(
            CostCenter(
                f"{STAGE_PREFIX}{s.name}", f"the {s.name} stage", s.range_ns.mean, s.range_ns.mean / total, s.name, 1.0
            )
            for s in by_time[:top]
        )
    per: dict[str, dict[str, float]] = {}
    for s in stages.values():
        if not s.has_gpu:
            continue
        idle = max(0.0, s.range_ns.mean - s.gpu_busy_ns.mean)
        per.setdefault(IDLE, {})[s.name] = idle
    for stage, cat, ns in view.categories:
        if stage in stages:
            per.setdefault(cat, {})
            per[cat][stage] = per[cat].get(stage, 0.0) + ns
    out = []
    for key, by_stage in per.items():
        tot = sum(by_stage.values())
        if tot <= 0:
            continue
        where = max(by_stage, key=lambda st: by_stage[st])
        out.append(CostCenter(key, COST_LABELS.get(key, key), tot, tot / total, where, by_stage[where] / tot))
    out.sort(key=lambda c: -c.total_ns)
    return tuple(out[:top])


def _ev(key: str, value: float, fmt: str) -> Evidence:
    return Evidence(key, value, FORMATS[fmt](value))


def _fires(rule: Rule, value: float) -> bool:
    return value > rule.threshold if rule.op == ">" else value < rule.threshold


def actions(view: ReportView, limits: dict[str, str] | None = None) -> tuple[Statement, ...]:
    """The sentences of every rule whose threshold the measured signals cross, in the stages whose limit
    (``limits``, :func:`classify` by default) the rule allows.

    A ``*`` rule that fires in several stages gives one sentence naming them all (its ``text_many``).
    """
    out: list[Statement] = []
    limits = classify(view) if limits is None else limits
    for rule in RULES:
        getter, fmt = METRICS[rule.metric]
        fired: list[tuple[StageView, Evidence, tuple[Evidence, ...]]] = []
        for stage in view.stages:
            if rule.stage not in ("*", stage.name):
                continue
            if rule.limits and limits.get(stage.name) not in rule.limits:
                continue
            value = getter(view, stage)
            if value is None or not math.isfinite(value) or not _fires(rule, value):
                continue
            also = tuple(_also(view, stage, m) for m in rule.also)
            ev = Evidence(f"stage:{stage.name}:{rule.metric}", value, shown_apart(value, rule.threshold, fmt))
            fired.append((stage, ev, also))
        if not fired:
            continue
        t = _ev(f"rule:{rule.id}:threshold", rule.threshold, fmt)

        if len(fired) > 1 and rule.text_many:
            listed = ", ".join(rule.item.format(**_fields(view, rule, *f)) for f in fired)
            text = rule.text_many.format(stages=listed, threshold=t.shown)
            out.append(Statement(text, (*(e for _, v, also in fired for e in (v, *also)), t), rule.id))
            continue
        for stage, v, also in fired:
            text = rule.text.format(**_fields(view, rule, stage, v, also), threshold=t.shown)
            out.append(Statement(text, (v, *also, t), rule.id))
    return _join_host(out)


def _join_host(found: list[Statement]) -> tuple[Statement, ...]:
    """``found`` with the decode host-overhead rules that fired joined into one finding, in the first one's place:
    the idle share as the diagnosis, the per-token counts as its evidence, one fix (its one bound: advice.py)."""
    parts = {st.rule: st for st in found if st.rule in HOST_RULES}
    if not parts:
        return tuple(found)
    idle = parts.get("launch-bound")
    head = "Decode (generating the text token by token) is held back by the CPU"
    text = f"{head}: {idle.text}." if idle else f"{head} on every generated token."
    counts = [parts[r].text for r in HOST_RULES[1:] if r in parts]
    if counts:
        listed = ", ".join(counts[:-1]) + (" and " if len(counts) > 1 else "") + counts[-1]
        text += f" Each generated token costs {listed}."
        if "syncs-per-token" in parts and "d2h-per-token" in parts:
            text += " A device-to-host copy is itself a wait, so those two counts can overlap."
    text += (
        " One change addresses all of it: replay each decode step as a CUDA graph (or use torch.compile with mode "
        "reduce-overhead, or a serving engine such as vLLM or SGLang)"
    )
    if "syncs-per-token" in parts or "d2h-per-token" in parts:
        text += ", which also needs token selection and stop checks kept on the GPU (no .item() or .cpu() in the loop)"
    joined = Statement(text + ".", tuple(e for st in parts.values() for e in st.evidence), HOST_FINDING, tuple(parts))
    first = next(i for i, st in enumerate(found) if st.rule in HOST_RULES)
    rest = [st for st in found if st.rule not in HOST_RULES]
    return (*rest[:first], joined, *rest[first:])


def _fields(
    view: ReportView, rule: Rule, stage: StageView, value: Evidence, also: tuple[Evidence, ...]
) -> dict[str, str]:
    """The placeholders of a rule's sentence for one stage (``{basis}``: the time the idle share is of)."""
    basis = "unprofiled" if idle_share(view, stage)[1] else "profiled"
    shown = {m: e.shown for m, e in zip(rule.also, also, strict=True)}
    return {"stage": stage.name, "value": value.shown, "basis": basis, **shown}


def _also(view: ReportView, stage: StageView, metric: str) -> Evidence:
    """A further metric a rule quotes (NaN where unknown: such a rule must only fire where it is known)."""
    getter, fmt = METRICS[metric]
    value = getter(view, stage)
    return _ev(f"stage:{stage.name}:{metric}", float("nan") if value is None else value, fmt)


@attrs.frozen
class Totals:
    """One pass over the top stages: profiled and unprofiled wall time, GPU busy time, FLOPs."""

    range_ns: float  #: profiled NVTX range time
    busy_ns: float  #: GPU busy time (the trace)
    unprofiled_ns: float | None  #: CUDA events without nsys (mean over every unprofiled run's passes)
    unprofiled_passes: int  #: how many passes that mean is over (the smallest count of any top stage)
    runs: tuple[tuple[str, float], ...]  #: each unprofiled run's mean pass time, in execution order
    flops: float | None  #: analytic FLOPs of a pass (None where a top stage has none)


def totals(view: ReportView) -> Totals:
    """The headline totals of one pass (unprofiled only where every top stage was timed unprofiled)."""
    stages = view.top_stages
    own = [unprofiled_own(view, s) for s in stages]
    known = bool(stages) and all(m is not None for m, _ in own)
    runs: tuple[tuple[str, float], ...] = ()
    if known and all(r for _, r in own):
        per = [dict(r) for _, r in own]
        order = [w for w, _ in own[0][1] if all(w in p for p in per)]
        if len(order) == len(own[0][1]) and len(set(order)) == len(order):  # one run per position
            runs = tuple((w, sum(p[w] for p in per)) for w in order)
    flops = [s.flops for s in stages]
    return Totals(
        range_ns=sum(s.range_ns.mean for s in stages),
        busy_ns=sum(s.gpu_busy_ns.mean for s in stages),
        unprofiled_ns=sum(m or 0.0 for m, _ in own) if known else None,
        unprofiled_passes=min((s.unprofiled_ns.n for s in stages if s.unprofiled_ns), default=0) if known else 0,
        runs=runs,
        flops=sum(f or 0.0 for f in flops) if flops and all(flops) else None,
    )


def _tokens_per_s(tokens: int | None, ns: float | None) -> float | None:
    return tokens / (ns / 1e9) if tokens and ns else None


def _measured(view: ReportView) -> Statement:
    """What was measured, in one sentence, and what a pass is."""
    ident = view.identity
    ev: list[Evidence] = []
    bits: list[str] = []
    if ident.pages:
        ev.append(_ev("identity:pages", float(ident.pages), "count"))
        bits.append(f"{ev[-1].shown} page{'s' if ident.pages != 1 else ''}")
    ev_passes = _ev("passes", float(view.passes), "count")
    ev.append(ev_passes)
    bits.append(f"{ev_passes.shown} pass{'es' if view.passes != 1 else ''} (repeats of the whole set)")
    tok = []
    if ident.prompt_tokens:
        ev.append(_ev("identity:prompt_tokens", float(ident.prompt_tokens), "count"))
        tok.append(f"a {ev[-1].shown}-token text prompt beside the image")
    if ident.new_tokens:
        ev.append(_ev("identity:new_tokens", float(ident.new_tokens), "count"))
        tok.append(f"up to {ev[-1].shown} generated tokens")
    if tok:
        bits.append(" and ".join(tok) + " per page")
    if ident.mode:
        bits.append(f"{ident.mode} mode")
    if ident.random_weights is True:
        bits.append(
            "seeded random weights (the GPU work and its timings are real; random weights only make the text "
            "meaningless and never stop early, so every page generates all its tokens)"
        )
    elif ident.random_weights is False:
        bits.append(
            f"the checkpoint's trained weights ({ident.model_source})" if ident.model_source else "trained weights"
        )
    else:
        bits.append("weights unknown (no run files)")
    if ident.model_code:
        bits.append(f"model code: {ident.model_code}")
    gpu = f" on {ident.gpu}" if ident.gpu else ""
    unit = "every page once through vision, prefill and decode" if ident.pages else "one run of the traced stages"
    text = f"Measured{gpu}: {', '.join(bits)}. A pass is {unit}; the times below are per pass unless they say per page."
    return Statement(text, tuple(ev))


def _unprofiled_share(view: ReportView, center: CostCenter) -> float | None:
    """A cost center's share of the unprofiled time of a pass (the traced GPU time taken as unchanged; idle:
    the unprofiled time the GPU was not busy); ``None`` without unprofiled timing."""
    if center.key.startswith(STAGE_PREFIX):
        return None
    t = totals(view)
    if not t.unprofiled_ns:
        return None
    if center.key == IDLE:
        return max(0.0, 1.0 - t.busy_ns / t.unprofiled_ns)
    return center.total_ns / t.unprofiled_ns


def _cost_note(view: ReportView, t: Totals, centers: list[CostCenter]) -> Statement | None:
    """What the listed cost centers leave out, and the profiler's stretch of the time their shares divide."""
    if not centers or centers[0].key.startswith(STAGE_PREFIX):
        return None
    rest = _ev("total:rest", 1.0 - sum(c.share for c in centers), "pct")
    shown = {c.key for c in centers}
    others = [COST_LABELS.get(c.key, c.key).split(" (")[0] for c in cost_centers(view, top=100) if c.key not in shown]
    text = f"The other {rest.shown} of the profiled time is GPU kernels of other kinds"
    text += f" ({', '.join(others)})." if others else "."
    evs = [rest]
    if t.unprofiled_ns:
        e = _ev("total:profiled_over_unprofiled", t.range_ns / t.unprofiled_ns, "times")
        evs.append(e)
        text += (
            f" The profiler stretched a pass {e.shown} (mostly CPU time), inflating the idle share and shrinking the "
            "kernel shares; the unprofiled shares in brackets divide the same GPU time by the unprofiled time."
        )
    return Statement(text, tuple(evs))


def _lost(view: ReportView) -> str:
    lost = LOST_RECORDS.get(view.gpu_lost or "", view.gpu_lost)
    return f"the GPU time per stage is unknown: the trace lost its {lost} (see the warning above)"


def _across(view: ReportView) -> str:
    """`` (vision, prefill, decode)``: the stages the headline adds up."""
    names = ", ".join(s.name for s in view.top_stages)
    return f" ({names})" if names else ""


def _headline(view: ReportView, t: Totals) -> Statement:
    """How long a pass took (unprofiled where measured, beside the profiled figure) and how busy the GPU was."""
    has_gpu = any(s.has_gpu for s in view.top_stages)
    ev_prof = _ev("total:range_ns", t.range_ns, "ms")
    decode = view.stage("decode")
    tokens = decode.tokens if decode is not None else None
    if t.unprofiled_ns is None:
        parts = [
            f"One pass{_across(view)} took {ev_prof.shown} under the profiler (no unprofiled run to time it without)"
        ]
        ev = [ev_prof]
        if decode is not None and (tps := _tokens_per_s(tokens, decode.range_ns.mean)) is not None:
            e = _ev("stage:decode:tokens_per_s", tps, "rate")
            ev.append(e)
            parts.append(f"decode generated {e.shown} tokens/s")
        if has_gpu:
            e = _ev("total:busy_frac", t.busy_ns / t.range_ns if t.range_ns else 0.0, "pct")
            ev.append(e)
            parts.append(f"the GPU was busy {e.shown} of that time")
        elif view.gpu_lost:
            parts.append(_lost(view))
        else:
            parts.append("the trace recorded no GPU activity")
        return Statement("; ".join(parts) + ".", tuple(ev))
    ev_un = _ev("total:unprofiled_ns", t.unprofiled_ns, "ms")
    ev_n = _ev("total:unprofiled_passes", float(t.unprofiled_passes), "count")
    ev = [ev_un, ev_n]
    per_page = ""
    if view.identity.pages and view.identity.pages > 1:
        e = _ev("total:unprofiled_per_page", t.unprofiled_ns / view.identity.pages, "ms")
        ev.append(e)
        per_page = f" ({e.shown} per page)"
    split = ""
    if len(t.runs) > 1 and t.unprofiled_passes % len(t.runs) == 0:
        e_r = _ev("total:unprofiled_run_count", float(len(t.runs)), "count")
        e_p = _ev("total:unprofiled_passes_per_run", float(t.unprofiled_passes // len(t.runs)), "count")
        ev += [e_r, e_p]
        split = f": {e_r.shown} unprofiled runs x {e_p.shown} passes"
    runs = ""
    if len(t.runs) > 1:
        items = []
        for i, (where, ns) in enumerate(t.runs):
            e = _ev(f"total:unprofiled_run:{i}", ns, "ms")
            ev.append(e)
            items.append(
                f"{e.shown} in the run {where} the capture" if where in ("before", "after") else f"{e.shown} ({where})"
            )
        runs = f"; the unprofiled runs differed: {', '.join(items)}"
    text = (
        f"One pass{_across(view)} took {ev_un.shown}{per_page} without the profiler (CUDA events, mean of "
        f"{ev_n.shown} unprofiled pass{'es' if t.unprofiled_passes != 1 else ''}{split}{runs}) and {ev_prof.shown} "
        "under the profiler."
    )
    ev.append(ev_prof)
    if decode is not None:
        d_un, _ = unprofiled_own(view, decode)
        if (tps := _tokens_per_s(tokens, d_un)) is not None:
            e1 = _ev("stage:decode:tokens_per_s_unprofiled", tps, "rate")
            e2 = _ev("stage:decode:tokens_per_s", _tokens_per_s(tokens, decode.range_ns.mean) or 0.0, "rate")
            ev += [e1, e2]
            e3 = _ev("stage:decode:tokens", float(tokens or 0), "count")
            ev.append(e3)
            every = " over all its pages" if view.identity.pages and view.identity.pages > 1 else ""
            text += (
                f" Decode generated {e1.shown} tokens/s without the profiler ({e2.shown} under it), counting the "
                f"{e3.shown} tokens decode generates in a pass{every} (prefill produces each page's first token)."
            )
    if has_gpu:
        e = _ev("total:busy_frac_unprofiled", min(1.0, t.busy_ns / t.unprofiled_ns) if t.unprofiled_ns else 0.0, "pct")
        e_i = _ev("total:idle_frac_unprofiled", 1.0 - e.value, "pct")
        ev += [e, e_i]
        text += (
            f" The GPU was busy {e.shown} of a pass's unprofiled time (its busy time from the trace), idle the "
            f"other {e_i.shown}. These headline "
            "figures come from the unprofiled runs; where the time goes, below, comes from the profiled trace."
        )
    elif view.gpu_lost:
        text += f" {_lost(view)[0].upper()}{_lost(view)[1:]}."
    else:
        text += " The trace recorded no GPU activity."
    return Statement(text, tuple(ev))


def mfu_model(view: ReportView) -> tuple[float, bool] | None:
    """The headline MFU: FLOPs of a pass / (peak x wall time of a pass), and whether the time is unprofiled.

    ``mfu_model = (F_vision + F_prefill + T * F_decode) / (P_peak * (t_vision + t_prefill + t_decode))``
    with the stage times measured without the profiler where the run has them (the profiled range times
    otherwise). ``None`` without FLOPs or a peak.
    """
    t = totals(view)
    if view.peaks is None or not t.flops:
        return None
    wall = t.unprofiled_ns if t.unprofiled_ns else t.range_ns
    if not wall:
        return None
    return t.flops / (view.peaks.tflops * 1e12 * wall / 1e9), t.unprofiled_ns is not None


def _mfu(view: ReportView) -> Statement | None:
    found = mfu_model(view)
    if found is None or view.peaks is None:
        return None
    value, unprofiled = found
    ev = _ev("model:mfu", value, "pct")
    peak = _ev("peak:tflops", view.peaks.tflops, "count")
    wall = "without the profiler" if unprofiled else "under the profiler (no unprofiled run)"
    text = (
        f"MFU (model FLOPs utilization; this is the figure to quote) is {ev.shown}: the model's FLOPs "
        f"of a pass (vision, prefill and every "
        f"decode step, from the analytic model) divided by the GPU's peak ({peak.shown} TFLOP/s) times the wall "
        f"time of a pass {wall}."
    )
    evs = [ev, peak]
    if view.model_mfu is not None and view.has_gpu:
        busy = _ev("model:mfu_busy", view.model_mfu.mean, "pct")
        evs.append(busy)
        text += (
            f" Counting only the time the GPU was busy it is {busy.shown}: how well the kernels use the GPU when "
            "it has work, leaving out the time it waits for the CPU (a diagnostic, not the figure to quote)."
        )
    return Statement(text, tuple(evs))


def _limits(view: ReportView, limits: dict[str, str]) -> tuple[Statement, ...]:
    """One sentence per top stage: its limit and the idle share and roofline ratio behind it."""
    out = []
    for stage in view.top_stages:
        lim = limits.get(stage.name)
        if lim is None:
            continue
        idle, unprofiled = idle_share(view, stage)
        e = _ev(f"stage:{stage.name}:idle_frac", idle or 0.0, "pct")
        of = "unprofiled time" if unprofiled else "profiled time"
        text = f"{stage.name}: {lim} ({LIMIT_WORDS[lim]}; GPU idle {e.shown} of {stage.name}'s {of}"
        evs = [e]
        ratio = stage.measured_over_predicted
        if ratio is not None:
            r = _ev(f"stage:{stage.name}:measured_over_predicted", ratio, "times")
            evs.append(r)
            text += f"; its GPU work took {r.shown} longer than the ideal (roofline) time"
        bound = roofline_bound(view, stage)
        if bound is not None and lim not in (MEMORY, COMPUTE):
            text += f"; at the ideal it would be limited by {BOUND_BY[bound]}"
        out.append(Statement(text + ").", tuple(evs)))
    return tuple(out)


def build(view: ReportView, whatif: Measurements | None = None) -> Summary:
    """The stakeholder summary of ``view``; ``whatif``: a what-if's measured gains for the advice."""
    from dsocr.report.advice import fund, gains_note, with_gains

    t = totals(view)
    headline = _headline(view, t)
    centers = []
    for c in cost_centers(view):
        e1 = _ev(f"cost:{c.key}:share", c.share, "pct")
        if c.key.startswith(STAGE_PREFIX):
            why = "GPU time unknown" if view.gpu_lost else "no GPU activity was traced"
            text = f"{c.label[0].upper()}{c.label[1:]}: {e1.shown} of the profiled time ({why})."
            centers.append((c, Statement(text, (e1,))))
            continue
        e2 = _ev(f"cost:{c.key}:stage_share:{c.stage}", c.stage_share, "pct")
        evs = [e1]
        un = ""
        if (u := _unprofiled_share(view, c)) is not None:
            e3 = _ev(f"cost:{c.key}:unprofiled_share", u, "pct")
            evs.append(e3)
            un = f" ({e3.shown} of the unprofiled time)"
        text = (
            f"{c.label[0].upper()}{c.label[1:]}: {e1.shown} of the profiled time{un}, of which {e2.shown} "
            f"falls in {c.stage}."
        )
        centers.append((c, Statement(text, (*evs, e2))))
    cost_note = _cost_note(view, t, [c for c, _ in centers])
    limits = classify(view)
    acts = with_gains(view, actions(view, limits), whatif)
    lims = _limits(view, limits)
    mfu = _mfu(view)
    measured = _measured(view)
    top = _top(view, t, [c for c, _ in centers], fund(view, acts, whatif))
    said = [*top, measured, headline, *(s for _, s in centers), *acts, *lims, *(x for x in (mfu, cost_note) if x)]
    words = " ".join(s.text for s in said) + " " + (gains_note(acts) or "")
    gloss = glossed(words)
    note = None
    if view.nesting_note:
        note = (
            "Vision ran inside prefill (the checkpoint's own code). Here prefill means its own work (exclusive: "
            "prefill - vision), so vision, prefill and decode each count once."
        )
    return Summary(headline, tuple(centers), acts, gloss, note, measured, mfu, lims, cost_note, top, gains_note(acts))


def _top(view: ReportView, t: Totals, centers: list[CostCenter], funded: Statement | None) -> tuple[Statement, ...]:
    """The first lines: the time of a page (or pass), the largest cost center, what to fund (each where known)."""
    out = []
    pages = view.identity.pages or 0
    wall = t.unprofiled_ns or t.range_ns
    if wall:
        how = "without the profiler" if t.unprofiled_ns else "under the profiler (no run without it)"
        key = "total:unprofiled" if t.unprofiled_ns else "total:range"
        e = _ev(f"{key}_ns", wall, "ms")
        if pages > 1:
            per = _ev(f"{key}_per_page", wall / pages, "ms")
            n = _ev("identity:pages", float(pages), "count")
            text = f"Time: {per.shown} per page ({e.shown} for one pass over the {n.shown} pages), measured {how}."
            out.append(Statement(text, (per, e, n)))
        else:
            out.append(Statement(f"Time: {e.shown} per pass, measured {how}.", (e,)))
    if centers and not centers[0].key.startswith(STAGE_PREFIX):
        c = centers[0]
        u = _unprofiled_share(view, c)
        share = (
            _ev(f"cost:{c.key}:unprofiled_share", u, "pct")
            if u is not None
            else _ev(f"cost:{c.key}:share", c.share, "pct")
        )
        of = "the time without the profiler" if u is not None else "the profiled time"
        where = _ev(f"cost:{c.key}:stage_share:{c.stage}", c.stage_share, "pct")
        label = COST_LABELS.get(c.key, c.key)
        text = f"Main cost: {label}, {share.shown} of {of}; {where.shown} of it falls in {c.stage}."
        out.append(Statement(text, (share, where)))
    if funded is not None:
        out.append(funded)
    return tuple(out)


def resolve(view: ReportView, key: str) -> float | None:
    """Recompute the value an :class:`Evidence` key names, from the report data alone."""
    parts = key.split(":")
    if parts[0] == "stage":
        stage = view.stage(parts[1])
        if stage is None:
            return None
        if parts[2] == "tokens":
            return None if stage.tokens is None else float(stage.tokens)
        if parts[2] == "tokens_per_s":
            return _tokens_per_s(stage.tokens, stage.range_ns.mean)
        if parts[2] == "tokens_per_s_unprofiled":
            return _tokens_per_s(stage.tokens, unprofiled_own(view, stage)[0])
        return METRICS[parts[2]][0](view, stage)
    if parts[0] == "rule":
        return next(r.threshold for r in RULES if r.id == parts[1])
    if parts[0] == "total":
        t = totals(view)
        if parts[1] == "unprofiled_run":
            return t.runs[int(parts[2])][1]
        if parts[1] == "busy_frac":
            return t.busy_ns / t.range_ns if t.range_ns else 0.0
        if parts[1] == "busy_frac_unprofiled":
            return min(1.0, t.busy_ns / t.unprofiled_ns) if t.unprofiled_ns else 0.0
        if parts[1] == "idle_frac_unprofiled":
            return 1.0 - min(1.0, t.busy_ns / t.unprofiled_ns) if t.unprofiled_ns else 1.0
        if parts[1] == "unprofiled_per_page":
            return (t.unprofiled_ns or 0.0) / (view.identity.pages or 1)
        if parts[1] == "range_per_page":
            return t.range_ns / (view.identity.pages or 1)
        if parts[1] == "unprofiled_run_count":
            return float(len(t.runs))
        if parts[1] == "unprofiled_passes_per_run":
            return float(t.unprofiled_passes // len(t.runs))
        if parts[1] == "profiled_over_unprofiled":
            return t.range_ns / t.unprofiled_ns if t.unprofiled_ns else None
        if parts[1] == "rest":
            return 1.0 - sum(c.share for c in cost_centers(view))
        return float(getattr(t, parts[1]))
    if parts[0] == "passes":
        return float(view.passes)
    if parts[0] == "identity":
        value = getattr(view.identity, parts[1])
        return None if value is None else float(value)
    if parts[0] == "model":
        if parts[1] == "mfu_busy":
            return None if view.model_mfu is None else view.model_mfu.mean
        found = mfu_model(view)
        return None if found is None else found[0]
    if parts[0] == "whatif":  # measured in a what-if's runs (report/advice.py), not in this view
        return None
    if parts[0] == "peak":
        return None if view.peaks is None else view.peaks.tflops
    if parts[0] == "cost":
        center = next((c for c in cost_centers(view, top=100) if c.key == parts[1]), None)
        if center is None:
            return None
        if parts[2] == "unprofiled_share":
            return _unprofiled_share(view, center)
        return center.share if parts[2] == "share" else center.stage_share
    raise KeyError(key)
