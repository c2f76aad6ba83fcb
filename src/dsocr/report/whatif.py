"""``dsocr whatif report``: the baseline and its variants compared from their run directories alone (no GPU,
no torch, no trace needed; docs/whatif.md).

Per stage and end to end: time per page (mean and pass-to-pass standard deviation of the unprofiled
passes), speedup over the baseline with its spread, and the significance call of ``dsocr diff``
(:mod:`dsocr.report.significance`); pages/s, output tokens/s, peak memory; launches and syncs per decode
step and GPU busy time where a trace analysis exists (else "not measured"); the batch sweep and the
capacity table (:mod:`dsocr.report.whatif_capacity`).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.errors import BadInput, BadUsage
from dsocr.contract.whatif_index import BASELINE, COMPLETE, Sweep, Variant, read_index
from dsocr.report import significance
from dsocr.report import whatif_capacity as cap
from dsocr.report.whatif_runs import END_TO_END, NO_GPU, STAGES, RunData, Spread, read_run

FORMATS: Final = ("md", "html", "json")
REPORT_MD: Final = "whatif.md"
REPORT_HTML: Final = "whatif.html"
REPORT_JSON: Final = "whatif-report.json"
NOT_MEASURED: Final = "not measured"


@attrs.frozen
class Member:
    """One variant in the report: its name, settings, status and (when it ran) its run data."""

    name: str
    variant: Variant | None
    status: str
    run: RunData | None
    message: str | None = None


@attrs.frozen
class Comparison:
    """One stage of one variant against the baseline (times per pass, ms)."""

    stage: str
    base: Spread
    other: Spread
    pages: int

    @property
    def speedup(self) -> float | None:
        """Baseline time / variant time."""
        return self.base.mean / self.other.mean if self.other.mean > 0 else None

    @property
    def speedup_sd(self) -> float | None:
        """The speedup's spread, first order: speedup x sqrt(cv_base^2 + cv_variant^2)."""
        s = self.speedup
        if s is None or self.base.sd is None or self.other.sd is None or self.base.mean <= 0:
            return None
        return s * math.sqrt((self.base.sd / self.base.mean) ** 2 + (self.other.sd / self.other.mean) ** 2)

    @property
    def significant(self) -> bool | None:
        """The ``dsocr diff`` rule on the per-pass times."""
        return significance.significant(self.base.mean, self.other.mean, self.base.sd, self.other.sd)

    @property
    def verdict(self) -> str:
        """``significant``, ``within noise`` or ``spread unknown``."""
        sig = self.significant
        return "spread unknown" if sig is None else "significant" if sig else "within noise"


@attrs.frozen
class WhatIf:
    """Everything the what-if report shows."""

    baseline: Member
    members: tuple[Member, ...]  #: every variant after the baseline
    sweep: Sweep | None
    warnings: tuple[str, ...] = ()

    @property
    def ran(self) -> tuple[Member, ...]:
        """The baseline and every variant that has run data."""
        return tuple(m for m in (self.baseline, *self.members) if m.run is not None)

    def compare(self, member: Member, stage: str) -> Comparison | None:
        """``member``'s stage against the baseline's (None where either lacks it)."""
        a = self.baseline.run.stage(stage) if self.baseline.run else None
        b = member.run.stage(stage) if member.run else None
        if a is None or b is None or member.run is None:
            return None
        return Comparison(stage, a.ms, b.ms, member.run.pages)

    def find(self, name: str) -> Member | None:
        """The member named ``name``."""
        return next((m for m in (self.baseline, *self.members) if m.name == name), None)


def _member_of_dir(path: Path, name: str) -> Member:
    return Member(name, None, COMPLETE, read_run(path))


def collect(paths: Sequence[Path]) -> WhatIf:
    """The what-if from one what-if directory (or its whatif.json), or from run directories (the first is the
    baseline). Refuses a mix, and a variant whose run directory is missing though it says it completed."""
    if not paths:
        raise BadUsage("dsocr whatif report: give a what-if directory or run directories (the first is the baseline)")
    index = read_index(paths[0]) if paths[0].exists() else None
    if index is not None:
        if len(paths) > 1:
            raise BadUsage("dsocr whatif report: give one what-if directory, or run directories, not both")
        root = paths[0] if paths[0].is_dir() else paths[0].parent
        members = []
        for e in index.entries:
            run = read_run(root / e.run_dir) if e.status == COMPLETE else None
            members.append(Member(e.variant.name, e.variant, e.status, run, e.message))
        return _checked(members[0], tuple(members[1:]), index.sweep)
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) != len(names):
        names = [f"{i}-{n}" if i else BASELINE for i, n in enumerate(names)]
    members = [_member_of_dir(p, n) for p, n in zip(paths, names, strict=True)]
    return _checked(members[0], tuple(members[1:]), None)


def _checked(base: Member, others: tuple[Member, ...], sweep: Sweep | None) -> WhatIf:
    if base.run is None:
        raise BadInput(f"the baseline did not run ({base.status}: {base.message}); run `dsocr whatif run` again")
    warnings = list(base.run.problems)
    b = base.run
    for m in others:
        if m.run is None:
            continue
        r = m.run
        warnings += [f"{m.name}: {p}" for p in r.problems]
        differs = [
            what
            for what, x, y in (
                ("pages", b.pages, r.pages),
                ("mode", b.mode, r.mode),
                ("generated tokens", b.max_new_tokens, r.max_new_tokens),
                ("prompt tokens", b.prompt_tokens, r.prompt_tokens),
            )
            if x != y
        ]
        if differs:
            warnings.append(
                f"{m.name} ran other work than the baseline ({', '.join(differs)}): its speedups compare "
                "different workloads"
            )
        if r.gpu != b.gpu:
            here, there = r.gpu or "an unknown device", b.gpu or "an unknown device"
            warnings.append(f"{m.name} ran on {here}, the baseline on {there}: its speedups mix two machines")
        if not r.unprofiled:
            warnings.append(f"{m.name}: no unprofiled run; its times are the profiled ones (nsys overhead included)")
    if not b.unprofiled:
        warnings.append("baseline: no unprofiled run; its times are the profiled ones (nsys overhead included)")
    return WhatIf(base, others, sweep, tuple(warnings))


# --- formatting -----------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 3) -> str:
    """``1,073`` / ``25.0`` / ``0.512``: three significant digits, thousands separated."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}" if x else "0"


def _pm(mean: float, sd: float | None) -> str:
    return f"{_num(mean)} ± {_num(sd)}" if sd is not None else f"{_num(mean)} (one pass)"


def _speed(c: Comparison | None) -> str:
    if c is None or c.speedup is None:
        return "n/a"
    sd = c.speedup_sd
    return f"{c.speedup:.2f}x ± {sd:.2f}" if sd is not None else f"{c.speedup:.2f}x"


def _gib(b: int | None) -> str:
    return "n/a" if not b else f"{b / 2**30:.2f}"


@attrs.frozen
class Table:
    """A titled table rendered as Markdown, HTML and JSON alike."""

    key: str
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def _busy(r: RunData, stage: str) -> str:
    """The trace's GPU busy time of a pass over the measured pass time of ``stage`` (capped at 100%)."""
    f, st = r.figures(stage), r.stage(stage)
    if f is None or f.gpu_busy_ms_per_pass is None or st is None or st.ms.mean <= 0:
        return NOT_MEASURED
    return f"{min(1.0, f.gpu_busy_ms_per_pass / st.ms.mean):.1%}"


def _settings(m: Member) -> str:
    if m.variant is not None and (m.variant.settings or m.run is None):
        return m.variant.describe()
    return ", ".join(f"{k}={v}" for k, v in m.run.execution) if m.run else ""


def tables(w: WhatIf) -> tuple[Table, ...]:
    """Every table of the report, in order."""
    out = []
    rows: list[tuple[str, ...]] = []
    for m in (w.baseline, *w.members):
        r = m.run
        e2e = r.stage(END_TO_END) if r else None
        passes = str(e2e.ms.n) if e2e else "0"
        clock = "CUDA events" if r is not None and r.clock == "cuda-event" else "host clock"
        source = "" if r is None else (f"unprofiled ({clock})" if r.unprofiled else "profiled only")
        status = m.status + (f": {m.message}" if m.message and m.status != COMPLETE else "")
        profiled = "yes" if m.variant and m.variant.profiled else "no"
        rows.append((m.name, _settings(m), status, passes, source, profiled))
    out.append(
        Table("variants", "Variants", ("variant", "settings", "status", "passes", "timing", "nsys"), tuple(rows))
    )
    rows = []
    for stage in (*STAGES, END_TO_END):
        for m in w.ran:
            st = m.run.stage(stage) if m.run else None
            if st is None or m.run is None:
                continue
            pages = max(1, m.run.pages)
            c = None if m is w.baseline else w.compare(m, stage)
            rows.append(
                (
                    stage,
                    m.name,
                    _pm(st.ms.mean / pages, None if st.ms.sd is None else st.ms.sd / pages),
                    "1 (baseline)" if m is w.baseline else _speed(c),
                    "" if c is None else c.verdict,
                )
            )
    out.append(
        Table(
            "stages",
            "Time per page by stage",
            ("stage", "variant", "ms per page (mean ± sd over passes)", "speedup vs baseline", "verdict"),
            tuple(rows),
            f"Significant: |B - A| > {significance.SIGMAS:g} x sqrt(sd_A^2 + sd_B^2) on the per-pass times, the rule "
            "of `dsocr diff`; with one pass on a side the spread is unknown and the change is not judged. The "
            "speedup's spread is speedup x sqrt(cv_A^2 + cv_B^2).",
        )
    )
    rows = []
    for m in w.ran:
        r = m.run
        assert r is not None
        dec = r.stage("decode")
        dtps = dec.tokens_per_pass / (dec.ms.mean / 1e3) if dec and dec.tokens_per_pass and dec.ms.mean > 0 else None
        rows.append(
            (
                m.name,
                str(r.batch),
                _num(cap.pages_per_s(r)),
                _num(cap.tokens_per_s(r)),
                _num(dtps),
                _gib(cap.peak_bytes(r)),
            )
        )
    out.append(
        Table(
            "throughput",
            "Throughput and memory (one GPU)",
            ("variant", "batch", "pages/s", "output tokens/s", "decode tokens/s", "peak allocated GiB"),
            tuple(rows),
            "Output tokens are every generated token of a pass (the first from prefill); peak allocated memory is "
            "the largest per-stage peak of torch's allocator.",
        )
    )
    rows = []
    for m in w.ran:
        r = m.run
        assert r is not None
        fig = r.figures("decode")
        if not r.gpu_traced:
            why = NOT_MEASURED if not r.trace else NO_GPU
            rows.append((m.name, why, why, *(why for _ in (*STAGES, END_TO_END))))
            continue
        busy = [_busy(r, s) for s in (*STAGES, END_TO_END)]
        rows.append(
            (
                m.name,
                _num(fig.launches_per_step) if fig and fig.launches_per_step is not None else NOT_MEASURED,
                _num(fig.syncs_per_step) if fig and fig.syncs_per_step is not None else NOT_MEASURED,
                *busy,
            )
        )
    out.append(
        Table(
            "trace",
            "From the trace (variants captured under nsys and analyzed)",
            (
                "variant",
                "launches per decode step",
                "syncs per decode step",
                *(f"GPU busy {s}" for s in (*STAGES, END_TO_END)),
            ),
            tuple(rows),
            "GPU busy: the trace's GPU busy time of a pass over the pass's wall time above (unprofiled where "
            f"measured). '{NOT_MEASURED}': the variant was not captured under nsys (`--profile NAME`) or not analyzed; "
            f"'{NO_GPU}': its trace holds no GPU activity (a CPU capture).",
        )
    )
    out += _sweep_tables(w)
    return tuple(out)


def _sweep_tables(w: WhatIf) -> list[Table]:
    batched = [(m.name, m.run) for m in w.ran if m.run is not None]
    names = {f"batch{b}" for b in w.sweep.batches} if w.sweep else set()
    swept = [m for m in w.members if m.name in names]
    if w.sweep is not None:
        chosen = [(m.name, m.run) for m in swept if m.run is not None]
    elif len({r.batch for _, r in batched}) > 1:
        chosen = batched
    else:
        chosen = []
    out = []
    if chosen:
        points = cap.sweep_points(chosen)
        rows = tuple(
            (
                p.name,
                str(p.batch),
                _num(p.pages_per_s),
                _num(p.tokens_per_s),
                _num(p.scaled_pages_per_s),
                _num(p.ideal_pages_per_s),
                _gib(p.peak_bytes),
            )
            for p in points
        )
        stop = ""
        if w.sweep is not None and w.sweep.stopped_at is not None:
            stop = f" The sweep stopped at batch {w.sweep.stopped_at}: {w.sweep.reason or 'it did not run'}."
        elif w.sweep is not None:
            stop = " Every batch asked for ran."
        out.append(
            Table(
                "sweep",
                "Batch sweep (one GPU)",
                (
                    "variant",
                    "batch",
                    "pages/s",
                    "output tokens/s",
                    "predicted pages/s (scaled)",
                    "predicted pages/s (ideal)",
                    "peak allocated GiB",
                ),
                rows,
                "Predicted (scaled): the smallest batch's measured pass with each stage scaled by the analytic "
                "model's roofline-time ratio between the batches (its efficiency carried over); predicted (ideal): "
                "the roofline time itself, a bound no run reaches. Pages of one crop grid share a forward." + stop,
            )
        )
    best = max(
        (m for m in w.ran if m.run is not None and cap.pages_per_s(m.run) is not None),
        key=lambda m: cap.pages_per_s(m.run) or 0.0 if m.run else 0.0,
        default=None,
    )
    if best is not None and best.run is not None:
        rows_c = tuple((r.gpu, _num(r.pages_per_day), r.kind, r.note) for r in cap.capacity(best.name, best.run))
        if rows_c:
            paper = (
                f"DeepSeek-OCR paper ({cap.PAPER_GPU})",
                _num(float(cap.PAPER_PAGES_PER_DAY)),
                "stated",
                "served with vLLM; conditions below",
            )
            out.append(
                Table(
                    "capacity",
                    "Capacity: pages per day per GPU",
                    ("GPU", "pages per day", "kind", "how"),
                    (*rows_c, paper),
                    f"From the fastest variant ({best.name}). Measured: pages/s x 86,400 on the GPU it ran on. "
                    "Predicted: that run's stages scaled by the roofline-time ratio of the analytic model on each GPU "
                    "of the peak table (docs/gpu-peaks.md); host time between stages kept as measured.",
                )
            )
            out.append(
                Table(
                    "paper",
                    "The paper's figure and what differs",
                    ("condition", "DeepSeek-OCR paper", "this measurement"),
                    cap.paper_conditions(best.name, best.run),
                )
            )
    return out


def headline(w: WhatIf) -> str:
    """One paragraph: what was compared and the end-to-end result of each variant."""
    b = w.baseline.run
    assert b is not None
    bits = []
    for m in w.members:
        c = w.compare(m, END_TO_END)
        if c is not None and c.speedup is not None:
            bits.append(f"{m.name} {_speed(c)} ({c.verdict})")
        elif m.status != COMPLETE:
            bits.append(f"{m.name} {m.status}")
    e2e = b.stage(END_TO_END)
    passes = e2e.ms.n if e2e else 0
    return (
        f"{len(w.members)} variant(s) against the baseline on {b.gpu or b.device}: {b.pages} page(s), {b.mode} mode, "
        f"{b.max_new_tokens} generated tokens per page, {passes} baseline pass(es). End to end: "
        f"{'; '.join(bits) or 'no variant ran'}."
    )


def to_json(w: WhatIf) -> dict[str, Any]:
    """The JSON document (``whatif-report.json``)."""
    comparisons = []
    for m in w.members:
        for s in (*STAGES, END_TO_END):
            c = w.compare(m, s)
            if c is not None:
                comparisons.append(
                    {
                        "variant": m.name,
                        "stage": s,
                        "baseline_ms_per_pass": c.base.mean,
                        "baseline_sd": c.base.sd,
                        "variant_ms_per_pass": c.other.mean,
                        "variant_sd": c.other.sd,
                        "speedup": c.speedup,
                        "speedup_sd": c.speedup_sd,
                        "noise": significance.noise(c.base.sd, c.other.sd),
                        "significant": c.significant,
                        "verdict": c.verdict,
                    }
                )
    return {
        "schema": "dsocr.whatif-report",
        "version": "1.0",
        "sigmas": significance.SIGMAS,
        "headline": headline(w),
        "warnings": list(w.warnings),
        "comparisons": comparisons,
        "tables": [
            {
                "key": t.key,
                "title": t.title,
                "headers": list(t.headers),
                "rows": [list(r) for r in t.rows],
                "note": t.note,
            }
            for t in tables(w)
        ],
    }


def render_md(w: WhatIf) -> str:
    """``whatif.md``."""
    lines = ["# DeepSeek-OCR what-if", "", headline(w), ""]
    lines += [f"> warning: {x}" for x in w.warnings] + ([""] if w.warnings else [])
    for t in tables(w):
        lines += [f"## {t.title}", "", "| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines += ["", t.note, ""] if t.note else [""]
    return "\n".join(lines).rstrip() + "\n"


def render_html(w: WhatIf) -> str:
    """``whatif.html``: the same tables, self-contained."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>DeepSeek-OCR what-if</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.warn{color:#a40}</style></head><body>",
        "<h1>DeepSeek-OCR what-if</h1>",
        f"<p>{e(headline(w))}</p>",
        *(f"<p class='warn'>warning: {e(x)}</p>" for x in w.warnings),
    ]
    for t in tables(w):
        parts.append(f"<h2 id='{e(t.key)}'>{e(t.title)}</h2><table><tr>")
        parts += [f"<th>{e(h)}</th>" for h in t.headers]
        parts.append("</tr>")
        for row in t.rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        if t.note:
            parts.append(f"<p>{e(t.note)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render(w: WhatIf, formats: Sequence[str]) -> dict[str, str]:
    """File name -> text for every asked format."""
    out = {}
    if "md" in formats:
        out[REPORT_MD] = render_md(w)
    if "html" in formats:
        out[REPORT_HTML] = render_html(w)
    if "json" in formats:
        out[REPORT_JSON] = json.dumps(to_json(w), indent=1, allow_nan=False, default=str) + "\n"
    return out
