"""Throughput and capacity of a what-if (docs/whatif.md): the analytic model's prediction of a run's stages
at a batch or on another GPU, the batch-sweep rows and the pages-per-day table beside the DeepSeek-OCR
paper's figure.

Predictions are roofline times (:mod:`dsocr.analytic.roofline`) of the analytic model's FLOPs and bytes
(:func:`dsocr.analytic.workload.estimate`): ``ideal`` is the roofline time itself; ``scaled`` is a measured
time multiplied, stage by stage, by the ratio of two roofline times (another batch, another GPU): the
measured efficiency carried over. Where the run was analyzed, only a stage's GPU busy time is scaled (the
time the GPU waits for the host does not change with the GPU); the time outside the stages is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import attrs

from dsocr.analytic.peaks import GPU_TABLE, Peak, match_gpu, resolve_peak
from dsocr.analytic.roofline import roofline
from dsocr.analytic.workload import ContextMode, Workload, estimate
from dsocr.contract.errors import BadInput
from dsocr.report.whatif_runs import END_TO_END, STAGES, RunData

SECONDS_PER_DAY: Final = 86_400
#: The DeepSeek-OCR paper's production figure (its abstract: "200k+ pages per day" on one A100-40G).
PAPER_PAGES_PER_DAY: Final = 200_000
PAPER_GPU: Final = "A100 40GB"


def _workload(run: RunData, grid: tuple[int, int], batch: int) -> Workload | None:
    cache = run.setting("cache") or "dynamic"
    context = ContextMode("fixed", int(cache.split(":", 1)[1])) if cache.startswith("static:") else ContextMode()
    dtype = {"float32": "fp32", "float16": "fp16"}.get(run.setting("dtype") or "", "bf16")
    logits: Literal["last", "all"] = "last" if run.setting("prefill_logits") == "last" else "all"
    try:
        return Workload(
            mode=run.mode,
            crop_grid=grid,
            prompt_tokens=run.prompt_tokens,
            new_tokens=max(1, run.max_new_tokens),
            batch=batch,
            dtype=dtype,
            context=context,
            attn_impl="eager" if run.setting("attn") == "eager" else "sdpa",
            prefill_logits=logits,
            vision_attn_impl="sdpa",
        ).validated()
    except BadInput:
        return None


def ideal_ns(run: RunData, batch: int, peak: Peak) -> dict[str, float] | None:
    """Roofline time of each stage (vision, prefill, decode) for all the run's pages, ``batch`` pages per
    forward (each page with pages of its own crop grid), on ``peak``; None where the model cannot say."""
    if not run.page_shapes or not peak.known:
        return None
    out = dict.fromkeys(STAGES, 0.0)
    for shape in run.page_shapes:
        w = _workload(run, shape.grid, batch)
        if w is None:
            return None
        est = estimate(w)
        for s in STAGES:
            t = roofline(est.stage(s).cost, peak).predicted_ns
            if t is None:
                return None
            out[s] += t / batch
    return out


def scaled_pass_ms(run: RunData, to: dict[str, float], frm: dict[str, float]) -> float | None:
    """The run's measured pass time with each stage scaled by ``to[stage] / frm[stage]`` (roofline times): only
    its GPU busy time where a trace analysis gives it (the host's time stays), else its whole time."""
    e2e = run.stage(END_TO_END)
    if e2e is None:
        return None
    total = e2e.ms.mean
    for s in STAGES:
        st = run.stage(s)
        if st is None or not frm.get(s):
            return None
        fig = run.figures(s)
        busy = fig.gpu_busy_ms_per_pass if fig is not None and fig.gpu_busy_ms_per_pass is not None else None
        scaled_part = st.ms.mean if busy is None else min(busy, st.ms.mean)
        total += scaled_part * (to[s] / frm[s] - 1.0)
    return total


@attrs.frozen
class SweepPoint:
    """One batch of a sweep: measured throughput beside the model's."""

    name: str
    batch: int
    pages_per_s: float | None
    tokens_per_s: float | None
    peak_bytes: int | None
    ideal_pages_per_s: float | None  #: the roofline (ideal) prediction
    scaled_pages_per_s: float | None  #: the first sweep point's measurement scaled by the roofline ratio
    status: str = "complete"


def pages_per_s(run: RunData) -> float | None:
    """Pages per second of a pass (unprofiled where measured)."""
    e2e = run.stage(END_TO_END)
    return run.pages / (e2e.ms.mean / 1e3) if e2e and run.pages and e2e.ms.mean > 0 else None


def tokens_per_s(run: RunData) -> float | None:
    """Output tokens per second of a pass."""
    e2e = run.stage(END_TO_END)
    if e2e is None or not run.output_tokens_per_pass or e2e.ms.mean <= 0:
        return None
    return run.output_tokens_per_pass / (e2e.ms.mean / 1e3)


def peak_bytes(run: RunData) -> int | None:
    """The largest peak of allocated memory over the run's stages."""
    peaks = [s.peak_bytes for s in run.stages if s.peak_bytes]
    return max(peaks) if peaks else None


def sweep_points(runs: Sequence[tuple[str, RunData]]) -> tuple[SweepPoint, ...]:
    """The sweep's rows by batch; the scaled prediction starts from the smallest batch's measurement."""
    if not runs:
        return ()
    ordered = sorted(runs, key=lambda r: r[1].batch)
    first = ordered[0][1]
    peak = resolve_peak(first.gpu) if first.gpu else None
    frm = ideal_ns(first, first.batch, peak) if peak else None
    out = []
    for name, run in ordered:
        ideal = ideal_ns(run, run.batch, peak) if peak else None
        ideal_pps = run.pages / (sum(ideal.values()) / 1e9) if ideal and sum(ideal.values()) > 0 else None
        scaled = scaled_pass_ms(first, ideal, frm) if ideal and frm else None
        out.append(
            SweepPoint(
                name,
                run.batch,
                pages_per_s(run),
                tokens_per_s(run),
                peak_bytes(run),
                ideal_pps,
                run.pages / (scaled / 1e3) if scaled and scaled > 0 else None,
            )
        )
    return tuple(out)


@attrs.frozen
class CapacityRow:
    """Pages per day on one GPU: measured on the run's GPU, predicted (scaled) on the others."""

    gpu: str
    pages_per_day: float | None
    kind: str  #: ``measured`` or ``predicted``
    note: str = ""


def capacity(name: str, run: RunData) -> tuple[CapacityRow, ...]:
    """The capacity table from the fastest run ``run`` (variant ``name``): its GPU measured, every other GPU of
    the peak table predicted by scaling each stage with the roofline ratio."""
    pps = pages_per_s(run)
    if pps is None or not run.gpu:
        return ()
    row, _ = match_gpu(run.gpu)
    rows = [CapacityRow(run.gpu, pps * SECONDS_PER_DAY, "measured", f"variant {name}, batch {run.batch}")]
    here = resolve_peak(run.gpu)
    frm = ideal_ns(run, run.batch, here)
    need = peak_bytes(run)
    for spec in GPU_TABLE:
        if row is not None and spec.name == row.name:
            continue
        to = ideal_ns(run, run.batch, resolve_peak(spec.name)) if frm else None
        scaled = scaled_pass_ms(run, to, frm) if to and frm else None
        note = f"scaled from {name} (batch {run.batch}) by the roofline ratio per stage"
        if need and spec.memory_gb and need > spec.memory_gb * 1e9:
            note += f"; needs {need / 2**30:.1f} GiB of memory, more than its {spec.memory_gb} GB"
        value = run.pages / (scaled / 1e3) * SECONDS_PER_DAY if scaled and scaled > 0 else None
        rows.append(CapacityRow(spec.name, value, "predicted", note if value else "the model cannot scale this run"))
    return tuple(rows)


def paper_conditions(name: str, run: RunData) -> tuple[tuple[str, str, str], ...]:
    """(condition, the paper's, this measurement's) for the paper's 200k pages per day."""
    return (
        ("GPU", "one A100-40G", run.gpu or "unknown"),
        (
            "serving engine",
            "vLLM (continuous batching, CUDA graphs, paged KV cache, fused MoE kernels)",
            f"dsocr's PyTorch replica, variant {name} ({', '.join(f'{k} {v}' for k, v in run.execution)})",
        ),
        ("batch", "as many requests as vLLM schedules at once", f"{run.batch} page(s) per forward"),
        (
            "tokens per page",
            "the page's own text, stopping at end of sequence (often hundreds to thousands)",
            f"exactly {run.max_new_tokens} generated (end of sequence ignored)",
        ),
        ("resolution mode", "not stated per page (the paper's modes vary)", run.mode),
        ("weights", "trained (real MoE routing)", run.weights or "not recorded"),
    )
