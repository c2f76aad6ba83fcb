"""The report's six plots, each a function from plain data to an SVG string.

Every plot has a title, axis labels with units, an accessible ``<title>``/``<desc>``, and
hover tooltips on its marks. With no data a plot returns a one-line placeholder that says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dsocr.report.plots.svg import (
    BUSY,
    GRID,
    IDLE,
    INK,
    PALETTE,
    Figure,
    Linear,
    Log,
    color_for,
    empty,
    nice_max,
    si,
    tick_label,
)
from dsocr.report.view import DecodeStep, RooflinePoint, Stat, TimelineBin

W = 720
LEFT = 110
RIGHT = 30
UNTRACED = "#9aa5b1"


def _ms(ns: float) -> str:
    if ns >= 1e8:
        return f"{ns / 1e6:,.0f} ms"
    return f"{ns / 1e6:,.3g} ms" if ns >= 1e4 else f"{ns / 1e3:.3g} µs"


def stage_breakdown(rows: Sequence[tuple[str, float | None, float]], plot_id: str = "plot-stage-breakdown") -> str:
    """Stacked horizontal bars per stage: GPU busy vs idle (ms). ``rows``: (stage, busy_ns or None, range_ns).

    A ``None`` busy time (no GPU traced) draws the range time as one neutral bar.
    """
    title = "Stage time: GPU busy vs idle"
    if not rows:
        return empty(plot_id, title, "No stage ranges in this trace.")
    bar_h, gap, top = 22, 12, 48
    h = top + len(rows) * (bar_h + gap) + 60
    fig = Figure(W, h, title, "Per stage, the mean profiled range time split into GPU busy and GPU idle.", plot_id)
    xmax = nice_max(max(r for _, _, r in rows) / 1e6)
    x = Linear(0, xmax, LEFT, W - RIGHT - 120)
    y_axis_bottom = top + len(rows) * (bar_h + gap)
    for t in x.ticks():
        fig.line(x(t), top - 6, x(t), y_axis_bottom, stroke=GRID)
    legend = [("GPU busy", BUSY), ("GPU idle", IDLE)]
    for i, (stage, busy_or_none, rng) in enumerate(rows):
        y = top + i * (bar_h + gap)
        fig.text(LEFT - 8, y + bar_h * 0.68, stage, anchor="end", size=11, cls="bar-label")
        if busy_or_none is None:
            fig.rect(
                x(0), y, x(rng / 1e6) - x(0), bar_h, UNTRACED, f"{stage}: {_ms(rng)} (GPU not traced)", cls="range"
            )
            fig.text(x(rng / 1e6) + 6, y + bar_h * 0.68, f"{_ms(rng)}, GPU not traced", size=10, cls="value")
            if ("GPU not traced", UNTRACED) not in legend:
                legend.append(("GPU not traced", UNTRACED))
            continue
        busy = min(busy_or_none, rng)
        idle = max(0.0, rng - busy)
        idle_pct = 100 * idle / rng if rng > 0 else 0.0
        fig.rect(x(0), y, x(busy / 1e6) - x(0), bar_h, BUSY, f"{stage}: GPU busy {_ms(busy)}", cls="busy")
        fig.rect(
            x(busy / 1e6), y, x(rng / 1e6) - x(busy / 1e6), bar_h, IDLE, f"{stage}: GPU idle {_ms(idle)}", cls="idle"
        )
        fig.text(x(rng / 1e6) + 6, y + bar_h * 0.68, f"{_ms(rng)}, {idle_pct:.1f}% idle", size=10, cls="value")
    fig.x_axis(x, y_axis_bottom, "mean range time per pass (ms)", x.ticks())
    fig.legend(LEFT, h - 10, legend, W - LEFT)
    return fig.render()


def category_breakdown(
    rows: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    plot_id: str = "plot-categories",
    labels: Mapping[str, str] | None = None,
) -> str:
    """100% stacked bars: each stage's GPU time by kernel category. ``rows``: (stage, [(category, ns)]).

    ``labels`` maps category keys to the names shown (colours stay keyed by category).
    """
    names = labels or {}
    title = "Kernel categories per stage (share of GPU time)"
    rows = [(s, [(c, v) for c, v in cats if v > 0]) for s, cats in rows]
    rows = [(s, cats) for s, cats in rows if cats]
    if not rows:
        return empty(plot_id, title, "No GPU kernels were attributed to a stage.")
    order: list[str] = []
    for _, cats in rows:
        for c, _v in sorted(cats, key=lambda cv: -cv[1]):
            if c not in order:
                order.append(c)
    colours = {c: color_for(c, i) for i, c in enumerate(order)}
    bar_h, gap, top = 22, 12, 48
    body = top + len(rows) * (bar_h + gap)
    h = body + 40 + 16 * (1 + len(order) // 5) + 10
    fig = Figure(W, h, title, "Per stage, the share of GPU kernel time in each kernel category.", plot_id)
    x = Linear(0, 100, LEFT, W - RIGHT)
    for t in x.ticks():
        fig.line(x(t), top - 6, x(t), body, stroke=GRID)
    for i, (stage, cats) in enumerate(rows):
        y = top + i * (bar_h + gap)
        total = sum(v for _, v in cats)
        fig.text(LEFT - 8, y + bar_h * 0.68, stage, anchor="end", size=11, cls="bar-label")
        acc = 0.0
        for c in order:
            v = next((v for cc, v in cats if cc == c), 0.0)
            if v <= 0:
                continue
            pct = 100 * v / total
            tip = f"{stage}: {names.get(c, c)} {pct:.1f}% ({_ms(v)})"
            fig.rect(x(acc), y, x(acc + pct) - x(acc), bar_h, colours[c], tip, cls="seg")
            if x(acc + pct) - x(acc) > 34:
                fig.text(x(acc + pct / 2), y + bar_h * 0.68, f"{pct:.0f}%", anchor="middle", size=9, fill="#ffffff")
            acc += pct
    fig.x_axis(x, body, "share of the stage's GPU kernel time (%)", x.ticks())
    fig.legend(LEFT, body + 52, [(names.get(c, c), colours[c]) for c in order], W - LEFT - RIGHT)
    return fig.render()


def decode_latency(steps: Sequence[DecodeStep], plot_id: str = "plot-decode-steps") -> str:
    """Decode step latency (ms) against the step index, with GPU busy per step and the context length."""
    title = "Decode step latency across steps"
    if not steps:
        return empty(plot_id, title, "No decode_step ranges in this trace.")
    h, top, bottom = 300, 40, 250
    right = W - 80
    fig = Figure(W, h, title, "Wall time of each decode step (and its GPU busy time) against the step index.", plot_id)
    n_lo, n_hi = min(s.step for s in steps), max(s.step for s in steps)
    x = Linear(n_lo, max(n_hi, n_lo + 1), 70, right)
    ymax = nice_max(max(s.range_ns for s in steps) / 1e6)
    y = Linear(0, ymax, bottom, top)
    fig.y_axis(y, 70, "step time (ms)", y.ticks(), grid_to=right)
    fig.x_axis(x, bottom, "decode step", [t for t in x.ticks(8) if t == int(t)])
    fig.polyline([(x(s.step), y(s.range_ns / 1e6)) for s in steps], BUSY, cls="latency")
    for s in steps:
        fig.circle(x(s.step), y(s.range_ns / 1e6), 2.2, BUSY, f"step {s.step}: {_ms(s.range_ns)}", cls="step")
    legend = [("step wall time", BUSY)]
    busy = [s for s in steps if s.gpu_busy_ns is not None]
    if busy:
        fig.polyline([(x(s.step), y((s.gpu_busy_ns or 0) / 1e6)) for s in busy], PALETTE[4], cls="busy")
        legend.append(("GPU busy", PALETTE[4]))
    ctx = [s for s in steps if s.context_len is not None]
    if ctx:
        c_lo = min(s.context_len or 0 for s in ctx)
        c_hi = max(s.context_len or 0 for s in ctx)
        cy = Linear(c_lo, c_hi if c_hi > c_lo else c_lo + 1, bottom, top)
        fig.polyline([(x(s.step), cy(s.context_len or 0)) for s in ctx], PALETTE[1], width=1, cls="context")
        fig.y_axis(cy, right, "context length (tokens)", cy.ticks(), right=True)
        legend.append(("context length", PALETTE[1]))
    fig.legend(70, h - 8, legend, W - 90)
    return fig.render()


def gpu_timeline(bins: Sequence[TimelineBin], plot_id: str = "plot-timeline") -> str:
    """GPU busy fraction over the trace's time axis, with the stage of each slice underneath."""
    title = "GPU busy over time"
    if not bins:
        return empty(plot_id, title, "No GPU activity to place on a timeline.")
    h, top, bottom = 220, 40, 150
    fig = Figure(W, h, title, "Fraction of each time slice during which the GPU ran a kernel or copy.", plot_id)
    t0 = min(b.start_ns for b in bins)
    t1 = max(b.end_ns for b in bins)
    x = Linear(0, (t1 - t0) / 1e6, 70, W - RIGHT)
    y = Linear(0, 100, bottom, top)
    fig.y_axis(y, 70, "GPU busy (%)", [0, 50, 100], grid_to=W - RIGHT)
    for b in bins:
        x0, x1 = x((b.start_ns - t0) / 1e6), x((b.end_ns - t0) / 1e6)
        pct = 100 * b.busy_frac
        tip = f"{(b.start_ns - t0) / 1e6:,.1f}-{(b.end_ns - t0) / 1e6:,.1f} ms: {pct:.1f}% busy" + (
            f" ({b.stage})" if b.stage else ""
        )
        fig.rect(x0, y(pct), x1 - x0, bottom - y(pct), BUSY, tip, cls="bin")
    # stage band
    stages = [b.stage for b in bins]
    names = [s for i, s in enumerate(stages) if s and s not in stages[:i]]
    colours = {s: PALETTE[(i + 1) % len(PALETTE)] for i, s in enumerate(names)}
    for b in bins:
        if b.stage:
            x0, x1 = x((b.start_ns - t0) / 1e6), x((b.end_ns - t0) / 1e6)
            fig.rect(x0, bottom + 4, x1 - x0, 8, colours[b.stage], b.stage, cls="stage-band")
    axis_y = bottom + 16
    fig.x_axis(x, axis_y, "time since the first GPU operation (ms)", x.ticks(8))
    if names:
        fig.legend(70, h - 6, [(s, colours[s]) for s in names], W - 90)
    return fig.render()


def roofline(
    points: Sequence[RooflinePoint], peak_flops: float, peak_bytes_per_s: float, plot_id: str = "plot-roofline"
) -> str:
    """Log-log roofline: arithmetic intensity (FLOP/byte) vs achieved FLOP/s, with the compute and bandwidth roofs."""
    title = "Roofline: achieved FLOP/s vs arithmetic intensity"
    pts = [p for p in points if p.intensity > 0 and p.achieved_flops > 0]
    if not pts or peak_flops <= 0 or peak_bytes_per_s <= 0:
        return empty(plot_id, title, "No analytic FLOPs/bytes or no GPU peak: the roofline needs both.")
    h, top, bottom, left, right = 380, 40, 320, 80, W - 150
    ridge = peak_flops / peak_bytes_per_s
    xs = [p.intensity for p in pts] + [ridge]
    ys = [p.achieved_flops for p in pts] + [peak_flops]
    x_lo = 10 ** math.floor(math.log10(min(xs) / 2))
    x_hi = 10 ** math.ceil(math.log10(max(xs) * 2))
    y_lo = 10 ** math.floor(math.log10(min(ys) / 2))
    y_hi = 10 ** math.ceil(math.log10(max(ys) * 1.5))
    x = Log(x_lo, x_hi, left, right)
    y = Log(y_lo, y_hi, bottom, top)
    fig = Figure(
        W,
        h,
        title,
        f"Stages and modules by FLOP per byte and achieved FLOP/s; roofs at {si(peak_flops, 'FLOP/s')} "
        f"and {si(peak_bytes_per_s, 'B/s')} (ridge at {ridge:.0f} FLOP/byte).",
        plot_id,
    )
    fig.y_axis(y, left, "achieved FLOP/s (over GPU busy time)", y.ticks(), fmt=lambda v: si(v).replace(" ", ""))
    fig.x_axis(x, bottom, "arithmetic intensity (FLOP/byte)", x.ticks(), fmt=tick_label)
    # roofs: bandwidth line from x_lo to the ridge, then flat compute roof
    bw_start = max(x_lo, y_lo / peak_bytes_per_s)
    fig.polyline(
        [(x(bw_start), y(bw_start * peak_bytes_per_s)), (x(ridge), y(peak_flops)), (x(x_hi), y(peak_flops))],
        INK,
        width=1.5,
        cls="roof",
    )
    fig.text(x(x_hi) - 4, y(peak_flops) - 6, f"peak {si(peak_flops, 'FLOP/s')}", anchor="end", size=10)
    fig.text(
        x(bw_start) + 6, y(bw_start * peak_bytes_per_s) - 8, f"{si(peak_bytes_per_s, 'B/s')}", size=10, cls="bw-label"
    )
    for i, p in enumerate(pts):
        colour = PALETTE[i % len(PALETTE)]
        r = 5.0 if p.kind == "stage" else 3.5
        tip = (
            f"{p.label} ({p.kind}): {p.intensity:.3g} FLOP/byte, {si(p.achieved_flops, 'FLOP/s')}, "
            f"{100 * p.achieved_flops / min(peak_flops, p.intensity * peak_bytes_per_s):.1f}% of its roof"
        )
        fig.circle(x(p.intensity), y(p.achieved_flops), r, colour, tip, cls=f"point {p.kind}")
    legend = [(f"{p.label} ({p.kind})", PALETTE[i % len(PALETTE)]) for i, p in enumerate(pts)]
    for i, (label, colour) in enumerate(legend[:16]):
        fig.rect(right + 14, top + i * 16 - 8, 9, 9, colour)
        fig.text(right + 27, top + i * 16, label[:20], size=10, cls="legend")
    return fig.render()


def pass_spread(rows: Sequence[tuple[str, Stat]], plot_id: str = "plot-pass-spread") -> str:
    """Per stage, each pass's range time as a dot, relative to the stage mean, with mean +/- stddev."""
    title = "Per-pass spread of stage times"
    if not rows:
        return empty(plot_id, title, "No stage ranges in this trace.")
    if all(s.n < 2 for _, s in rows):
        return empty(plot_id, title, "Single pass: the spread across passes is unknown (capture with --repeats 3).")
    devs = [100 * (v / s.mean - 1) for _, s in rows if s.mean for v in s.values]
    # the whiskers (+/- stddev) reach past the dots with few passes: the axis holds both
    devs += [100 * s.stddev / s.mean for _, s in rows if s.mean and s.stddev is not None]
    lim = max(1.0, nice_max(max(abs(d) for d in devs) * 1.1)) if devs else 1.0
    row_h, top = 30, 48
    body = top + len(rows) * row_h
    h = body + 46
    fig = Figure(
        W,
        h,
        title,
        "Each dot is one pass's range time, as a deviation from the stage mean; the bar is +/- one stddev.",
        plot_id,
    )
    x = Linear(-lim, lim, LEFT, W - RIGHT - 140)
    for t in x.ticks(6):
        fig.line(x(t), top - 8, x(t), body, stroke=GRID)
    fig.line(x(0), top - 8, x(0), body, stroke="#999999", dash="3 3")
    for i, (stage, s) in enumerate(rows):
        yc = top + i * row_h + row_h / 2 - 6
        fig.text(LEFT - 8, yc + 4, stage, anchor="end", size=11, cls="bar-label")
        if not s.mean:
            continue
        sd = s.stddev
        if sd is not None:
            rel = min(abs(100 * sd / s.mean), lim)  # never over the axis labels
            fig.line(x(-rel), yc, x(rel), yc, stroke=PALETTE[0], width=2)
            fig.line(x(-rel), yc - 5, x(-rel), yc + 5, stroke=PALETTE[0])
            fig.line(x(rel), yc - 5, x(rel), yc + 5, stroke=PALETTE[0])
        for k, v in enumerate(s.values):
            fig.circle(x(100 * (v / s.mean - 1)), yc, 3.5, PALETTE[1], f"{stage} pass {k}: {_ms(v)}", cls="pass")
        cv = s.cv
        label = f"mean {_ms(s.mean)}" + (f", CV {100 * cv:.1f}%" if cv is not None else ", 1 pass")
        fig.text(W - RIGHT - 132, yc + 4, label, size=10, cls="value")
    fig.x_axis(x, body, "deviation from the stage mean (%)", x.ticks(6))
    return fig.render()
