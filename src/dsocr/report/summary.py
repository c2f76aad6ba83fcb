"""The stakeholder summary: the largest cost centers and what to do next, from measured signals.

Recommendations come from one declarative table, :data:`RULES`: a rule names a metric of a
stage, a comparison and a threshold; when the measured value crosses it, its sentence is
rendered with that value (and the threshold). Nothing is canned: every number in a sentence
is an :class:`Evidence` that names where it came from (``stage:decode:idle_frac``), and
:func:`resolve` recomputes it from the report data, which the tests use to trace every number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from dsocr.report.view import ReportView, StageView

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
}


def pct(x: float) -> str:
    """0.9651 -> ``96.5%``."""
    return f"{100 * x:.1f}%"


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


FORMATS: dict[str, Callable[[float], str]] = {"pct": pct, "count": count, "times": times, "ms": ms}

#: The same formats with a given number of decimals (to tell a value from its threshold).
_PRECISE: dict[str, Callable[[float, int], str]] = {
    "pct": lambda x, d: f"{100 * x:.{d}f}%",
    "count": lambda x, d: f"{x:,.{d}f}",
    "times": lambda x, d: f"{x:.{d}f}x",
    "ms": lambda ns, d: f"{ns / 1e6:,.{d}f} ms",
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


def _per_token(stat_name: str) -> Callable[[ReportView, StageView], float | None]:
    def get(view: ReportView, stage: StageView) -> float | None:
        return stage.per_token(getattr(stage, stat_name))

    return get


#: Stage metrics the rules may test: name -> (getter, format).
METRICS: dict[str, tuple[Callable[[ReportView, StageView], float | None], str]] = {
    "idle_frac": (_mean("idle_frac"), "pct"),
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
    "measured_over_predicted": (lambda v, s: s.measured_over_predicted, "times"),
    "measured_over_calibrated": (lambda v, s: s.measured_over_calibrated, "times"),
    # far from the roofline: how far the measured GPU time is from its kernels timed alone (|ratio - 1|)
    "calibrated_gap": (
        lambda v, s: (
            abs(s.measured_over_calibrated - 1)
            if s.measured_over_calibrated is not None and (s.measured_over_predicted or 0) > 3.0
            else None
        ),
        "pct",
    ),
    "share_moe_routing": (_cat_share("moe_routing"), "pct"),
    "share_attention": (_cat_share("attention"), "pct"),
    "share_gemm": (_cat_share("gemm"), "pct"),
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


#: The recommendation rules, in the order the summary lists them.
RULES: tuple[Rule, ...] = (
    Rule(
        "launch-bound",
        "decode",
        "idle_frac",
        ">",
        0.5,
        "The GPU sat idle {value} of the decode time (more than {threshold}): generating tokens is limited by the "
        "CPU issuing work one small step at a time, not by the GPU. Replaying each decode step as a CUDA graph, "
        "torch.compile (mode reduce-overhead) or a serving engine such as vLLM or SGLang would pay.",
    ),
    Rule(
        "launches-per-token",
        "decode",
        "launches_per_token",
        ">",
        100,
        "Each generated token costs {value} kernel launches (more than {threshold}); fusing operations "
        "(torch.compile) or a CUDA graph cuts that per-token overhead.",
    ),
    Rule(
        "d2h-per-token",
        "decode",
        "d2h_per_token",
        ">",
        0.5,
        "Each generated token makes {value} device-to-host copies on average (more than {threshold}); each one stalls "
        "the CPU until the GPU catches up. Keep token selection and stop checks on the GPU.",
    ),
    Rule(
        "syncs-per-token",
        "decode",
        "syncs_per_token",
        ">",
        0.5,
        "Each generated token waits for the GPU {value} times (more than {threshold}); remove the "
        "synchronizations (.item(), .cpu(), printing tensors) from the decode loop.",
    ),
    Rule(
        "moe-routing",
        "*",
        "share_moe_routing",
        ">",
        0.15,
        "MoE routing takes {value} of the GPU time in {stage} (more than {threshold}); a fused MoE kernel "
        "(routing and grouped expert GEMMs in one) would pay.",
        "MoE routing takes more than {threshold} of the GPU time in {stages}; a fused MoE kernel "
        "(routing and grouped expert GEMMs in one) would pay.",
    ),
    Rule(
        "sam-attention",
        "sam",
        "share_attention",
        ">",
        0.3,
        "Attention takes {value} of the GPU time in SAM (more than {threshold}); SAM's global layers attend "
        "over the whole image, so a fused flash attention kernel there would pay.",
    ),
    Rule(
        "low-mfu-prefill",
        "prefill",
        "mfu_busy",
        "<",
        0.3,
        "Prefill reaches {value} MFU while the GPU is busy (below {threshold}); its matrix multiplications "
        "are too small or too fragmented to fill the GPU: batch pages together or use fused kernels.",
    ),
    Rule(
        "low-mfu-vision",
        "vision",
        "mfu_busy",
        "<",
        0.3,
        "The vision encoders reach {value} MFU while the GPU is busy (below {threshold}); batching several "
        "pages or crops per forward pass would use the GPU better.",
    ),
    Rule(
        "far-from-roofline",
        "*",
        "measured_over_predicted",
        ">",
        3.0,
        "The GPU work of {stage} took {value} the roofline prediction (more than {threshold}); "
        "its kernels are far from the hardware limit, so kernel choice, not hardware, limits it.",
        "The GPU work took more than {threshold} the roofline prediction in {stages}; these kernels are "
        "far from the hardware limit, so kernel choice (fused or better-tuned kernels), not hardware, limits them.",
    ),
    Rule(
        "kernels-explain",
        "*",
        "calibrated_gap",
        "<",
        0.15,
        "Far from the roofline, yet its kernels timed alone add up to the measured GPU time of {stage} (off by "
        "{value}, less than {threshold}): the time is in the kernels themselves, so faster kernels (fused, better "
        "tuned), not less overhead, would pay; the module table shows which.",
        "Far from the roofline, yet the kernels timed alone add up to the measured GPU time (off by less than "
        "{threshold}) in {stages}: the time is in the kernels themselves, so faster kernels (fused, better tuned), "
        "not less overhead, would pay.",
    ),
    Rule(
        "composition-gap",
        "*",
        "measured_over_calibrated",
        ">",
        1.3,
        "The GPU work of {stage} took {value} the time of its kernels timed alone (more than {threshold}): "
        "something beyond the kernels the model lists (extra copies, cache misses, contention) costs time there.",
        "The GPU work took more than {threshold} the time of its kernels timed alone in {stages}: something "
        "beyond the kernels the model lists (extra copies, cache misses, contention) costs time there.",
    ),
    Rule(
        "noisy",
        "*",
        "max_dev",
        ">",
        0.10,
        "A single pass of {stage} strays {value} from the mean of the passes (the target is within "
        "±{threshold}); the mean itself is known to ±{sem_rel} (standard error): compare runs with care and use "
        "more repeats.",
        "Single passes stray more than ±{threshold} from their mean in {stages} (largest deviation; the target is "
        "within ±{threshold}): compare runs with care and use more repeats.",
        also=("sem_rel",),
    ),
    Rule(
        "profiler-overhead",
        "*",
        "overhead_beyond_drift",
        ">",
        0.2,
        "Profiling slowed {stage} by {value} against the unprofiled runs (more than {threshold}; identical "
        "unprofiled runs differed by only {baseline_drift}); read its absolute times with that in mind.",
        "Profiling slowed these stages by more than {threshold} against the unprofiled runs, more than identical "
        "unprofiled runs differed: {stages}; read their absolute times with that in mind.",
        also=("baseline_drift",),
        item="{stage} ({value}, drift {baseline_drift})",
    ),
    Rule(
        "overhead-drift-unknown",
        "*",
        "overhead_drift_unknown",
        ">",
        0.2,
        "Profiling slowed {stage} by {value} against the one unprofiled run (more than {threshold}); with one "
        "unprofiled run the host's own drift between identical runs is unknown and may be part of it (a capture "
        "with several unprofiled runs, the default of --baseline-runs, measures it).",
        "Profiling slowed these stages by more than {threshold} against the one unprofiled run: {stages}; the "
        "host's own drift between identical runs is unknown and may be part of it (a capture with several "
        "unprofiled runs, the default of --baseline-runs, measures it).",
    ),
    Rule(
        "overhead-within-drift",
        "*",
        "overhead_within_drift",
        ">",
        0.2,
        "Profiling appears to slow {stage} by {value} (more than {threshold}), but identical unprofiled runs "
        "differed by {baseline_drift} among themselves: the overhead cannot be separated from host drift, so "
        "neither number says what nsys costs.",
        "Profiling appears to slow these stages by more than {threshold}, but identical unprofiled runs differed "
        "among themselves by more still: {stages}; the overhead cannot be separated from host drift there.",
        also=("baseline_drift",),
        item="{stage} (overhead {value}, drift {baseline_drift})",
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


@attrs.frozen
class CostCenter:
    """A cost center: a kernel category or GPU idle time, summed over the top stages."""

    key: str
    label: str
    total_ns: float
    share: float  #: of the total time of the top stages
    stage: str  #: where it is most pronounced
    stage_share: float  #: its share of that stage's time


@attrs.frozen
class Summary:
    """Everything summary.md and the top of the report show."""

    headline: Statement
    cost_centers: tuple[tuple[CostCenter, Statement], ...]
    actions: tuple[Statement, ...]
    glossary: tuple[tuple[str, str], ...]
    #: Where vision ran inside prefill: how the stages are counted (the prefill figures are its own work).
    note: str | None = None


def cost_centers(view: ReportView, top: int = 3) -> tuple[CostCenter, ...]:
    """The ``top`` largest cost centers over the top stages (kernel categories and GPU idle time)."""
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
        where = max(by_stage, key=lambda st: by_stage[st] / stages[st].range_ns.mean if stages[st].range_ns.mean else 0)
        rng = stages[where].range_ns.mean
        out.append(
            CostCenter(key, COST_LABELS.get(key, key), tot, tot / total, where, by_stage[where] / rng if rng else 0.0)
        )
    out.sort(key=lambda c: -c.total_ns)
    return tuple(out[:top])


def _ev(key: str, value: float, fmt: str) -> Evidence:
    return Evidence(key, value, FORMATS[fmt](value))


def _fires(rule: Rule, value: float) -> bool:
    return value > rule.threshold if rule.op == ">" else value < rule.threshold


def actions(view: ReportView) -> tuple[Statement, ...]:
    """The sentences of every rule whose threshold the measured signals cross.

    A ``*`` rule that fires in several stages gives one sentence naming them all (its ``text_many``).
    """
    out: list[Statement] = []
    for rule in RULES:
        getter, fmt = METRICS[rule.metric]
        fired: list[tuple[StageView, Evidence, tuple[Evidence, ...]]] = []
        for stage in view.stages:
            if rule.stage not in ("*", stage.name):
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
            listed = ", ".join(rule.item.format(**_fields(rule, *f)) for f in fired)
            text = rule.text_many.format(stages=listed, threshold=t.shown)
            out.append(Statement(text, (*(e for _, v, also in fired for e in (v, *also)), t), rule.id))
            continue
        for stage, v, also in fired:
            text = rule.text.format(**_fields(rule, stage, v, also), threshold=t.shown)
            out.append(Statement(text, (v, *also, t), rule.id))
    return tuple(out)


def _fields(rule: Rule, stage: StageView, value: Evidence, also: tuple[Evidence, ...]) -> dict[str, str]:
    """The placeholders of a rule's sentence for one stage."""
    return {"stage": stage.name, "value": value.shown, **{m: e.shown for m, e in zip(rule.also, also, strict=True)}}


def _also(view: ReportView, stage: StageView, metric: str) -> Evidence:
    """A further metric a rule quotes (NaN where unknown: such a rule must only fire where it is known)."""
    getter, fmt = METRICS[metric]
    value = getter(view, stage)
    return _ev(f"stage:{stage.name}:{metric}", float("nan") if value is None else value, fmt)


def build(view: ReportView) -> Summary:
    """The stakeholder summary of ``view``."""
    stages = view.top_stages
    total = sum(s.range_ns.mean for s in stages)
    busy = sum(s.gpu_busy_ns.mean for s in stages)
    ev_total = _ev("total:range_ns", total, "ms")
    ev_busy = _ev("total:busy_frac", busy / total if total else 0.0, "pct")
    ev_passes = _ev("passes", float(view.passes), "count")
    has_gpu = any(s.has_gpu for s in stages)
    where = f" on {view.identity.gpu or 'an unnamed GPU'}" if has_gpu or view.identity.gpu else ""
    names = ", ".join(s.name for s in stages) or "no stage"
    first = (
        f"Across {names}, one pass took {ev_total.shown}{where} (mean of {ev_passes.shown} "
        f"pass{'es' if view.passes != 1 else ''})"
    )
    if has_gpu:
        headline = Statement(
            f"{first}; the GPU was busy for {ev_busy.shown} of that time.", (ev_total, ev_passes, ev_busy)
        )
    elif view.gpu_lost:
        lost = LOST_RECORDS.get(view.gpu_lost, view.gpu_lost)
        headline = Statement(
            f"{first}; the GPU time per stage is unknown: the trace lost its {lost} (see the warning above).",
            (ev_total, ev_passes),
        )
    else:
        headline = Statement(f"{first}; the trace recorded no GPU activity.", (ev_total, ev_passes))
    centers = []
    for c in cost_centers(view):
        e1 = _ev(f"cost:{c.key}:share", c.share, "pct")
        if c.key.startswith(STAGE_PREFIX):
            why = "GPU time unknown" if view.gpu_lost else "no GPU activity was traced"
            text = f"{c.label[0].upper()}{c.label[1:]}: {e1.shown} of the total time ({why})."
            centers.append((c, Statement(text, (e1,))))
            continue
        e2 = _ev(f"cost:{c.key}:stage_share:{c.stage}", c.stage_share, "pct")
        text = (
            f"{c.label[0].upper()}{c.label[1:]}: {e1.shown} of the total time, most pronounced in {c.stage} "
            f"({e2.shown} of that stage)."
        )
        centers.append((c, Statement(text, (e1, e2))))
    acts = actions(view)
    words = " ".join([headline.text] + [s.text for _, s in centers] + [a.text for a in acts])
    gloss = tuple((term, meaning) for term, meaning in GLOSSARY.items() if term in words)
    note = None
    if view.nesting_note:
        note = (
            "Vision ran inside prefill (the checkpoint's own code). Here prefill means its own work (exclusive: "
            "prefill - vision), so vision, prefill and decode each count once."
        )
    return Summary(headline, tuple(centers), acts, gloss, note)


def resolve(view: ReportView, key: str) -> float | None:
    """Recompute the value an :class:`Evidence` key names, from the report data alone."""
    parts = key.split(":")
    if parts[0] == "stage":
        stage = view.stage(parts[1])
        return None if stage is None else METRICS[parts[2]][0](view, stage)
    if parts[0] == "rule":
        return next(r.threshold for r in RULES if r.id == parts[1])
    if parts[0] == "total":
        total = sum(s.range_ns.mean for s in view.top_stages)
        if parts[1] == "range_ns":
            return total
        return sum(s.gpu_busy_ns.mean for s in view.top_stages) / total if total else 0.0
    if parts[0] == "passes":
        return float(view.passes)
    if parts[0] == "cost":
        center = next((c for c in cost_centers(view, top=100) if c.key == parts[1]), None)
        if center is None:
            return None
        return center.share if parts[2] == "share" else center.stage_share
    raise KeyError(key)
