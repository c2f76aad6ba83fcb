"""report.html (one self-contained file: CSS and SVG plots inline, no network) and summary.md.

Both are rendered with jinja2 from the same :class:`~dsocr.report.view.ReportView` the other
reports use; the plots are computed here, once, and also written as .svg files beside the
Markdown report so Markdown viewers show them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, suppress
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import jinja2
from markupsafe import Markup, escape

from dsocr.analyze.categories import LABELS
from dsocr.contract import rundir
from dsocr.contract.atomic import atomic_path
from dsocr.report import jinja
from dsocr.report import summary as summ
from dsocr.report.model import distinct_short_names, frac, pipeline_stages
from dsocr.report.view import KernelView, ReportView, Stat

if TYPE_CHECKING:
    from dsocr.analyze.analysis_doc import AnalysisDocument
    from dsocr.report.advice import Measurements

PLOTS_DIR = "plots"


def fmt_ms(ns: float | None) -> str:
    """ns -> ``4,596.1 ms`` (``n/a`` when unknown)."""
    if ns is None or not math.isfinite(ns):
        return "n/a"
    v = ns / 1e6
    return f"{v:,.1f} ms" if v >= 10 else f"{v:,.3f} ms"


def fmt_pct(x: float | None) -> str:
    """0.9651 -> ``96.5%``; below 1% two significant digits (0.00048 -> ``0.048%``), so a small
    value never reads ``0.0%``."""
    return frac(x)


def label(category: str | None) -> str:
    """A kernel category's display label (one table: ``dsocr.analyze.categories.LABELS``)."""
    return "" if category is None else LABELS.get(category, category)


def fmt_count(x: float | None) -> str:
    """A count with thousands separators (one decimal when fractional)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.0f}" if x == round(x) else f"{x:,.1f}"


def fmt_si(x: float | None, unit: str = "") -> str:
    """1.2e12 -> ``1.2 T<unit>``."""
    from dsocr.report.plots.svg import si

    return "n/a" if x is None else si(x, unit)


def fmt_bytes(x: float | None) -> str:
    """Bytes in binary units: ``6.21 GiB``."""
    if x is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} B"


_SCALAR = {"ms": fmt_ms, "pct": fmt_pct, "count": fmt_count}


def fmt_scalar(x: float | None, kind: str = "ms") -> str:
    """One value formatted as ``kind`` (``ms``, ``pct``, ``count``)."""
    return _SCALAR[kind](x)


def fmt_stat(stat: Stat | None, kind: str = "ms") -> str:
    """``mean ± stddev (CV x%, s.e. y%)`` (stddev with the mean's precision): the aggregate, the spread of one
    pass, and the standard error of the mean relative to it; with one pass just the mean."""
    if stat is None or not stat.values:
        return "n/a"
    f = _SCALAR[kind]
    sd = stat.stddev
    if sd is None:
        return f(stat.mean)
    cv = stat.cv
    tail = f" (CV {fmt_pct(cv)}, s.e. {fmt_pct(stat.sem_rel)})" if cv is not None else ""
    if kind == "count" and sd == 0:
        return f(stat.mean)  # a count that does not vary: no "± 0 (CV 0.0%, s.e. 0.0%)"
    if kind == "ms":
        digits = 1 if abs(stat.mean) >= 10e6 else 3
        return f"{stat.mean / 1e6:,.{digits}f} ± {sd / 1e6:,.{digits}f} ms{tail}"
    if kind == "pct":
        m = fmt_pct(stat.mean)
        digits = len(m.rstrip("%").partition(".")[2])  # the stddev with the mean's decimals
        return f"{m} ± {100 * sd:.{digits}f}%{tail}"
    return f"{f(stat.mean)} ± {f(sd)}{tail}"


def fmt_stat_cell(stat: Stat | None, kind: str = "ms") -> Markup:
    """:func:`fmt_stat` for a narrow table cell: the ``(CV x%)`` tail on a line of its own (same text)."""
    text = fmt_stat(stat, kind)
    main, sep, tail = text.partition(" (CV ")
    if not sep:
        return Markup(escape(text))
    return Markup(f'{escape(main)}<span class="cv"> {escape(sep.strip() + " " + tail)}</span>')


@cache
def environment() -> jinja2.Environment:
    """The jinja2 environment of the report templates (HTML-escaping for .html templates)."""
    env = jinja.environment(
        "report",
        autoescape=("html", "html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        label=label,
        ms=fmt_ms,
        short=short,
        pct=fmt_pct,
        count=fmt_count,
        si=fmt_si,
        bytes=fmt_bytes,
        stat=fmt_stat,
        statcell=fmt_stat_cell,
        scalar=fmt_scalar,
    )
    return env


@attrs.frozen
class Plot:
    """One rendered plot: its id (file stem), heading and SVG markup."""

    id: str
    heading: str
    svg: str

    @property
    def markup(self) -> Markup:
        """The SVG as trusted markup for inlining."""
        return Markup(self.svg)  # generated and escaped by plots.svg


def render_plots(view: ReportView) -> tuple[Plot, ...]:
    """The report's six plots, rendered from ``view``."""
    from dsocr.report import plots  # only the html outputs need them

    shown = [s for s in view.stages if s.name != "decode_step"]  # steps are the decode plot's
    stage_rows = [(s.name, s.gpu_busy_ns.mean if s.has_gpu else None, s.range_ns.mean) for s in shown]
    cat_rows: list[tuple[str, list[tuple[str, float]]]] = []
    for s in view.stages:
        cats = [(c, ns) for st, c, ns in view.categories if st == s.name]
        if cats:
            cat_rows.append((s.name, cats))
    peaks = view.peaks
    roof = (
        plots.roofline(view.roofline, peaks.tflops * 1e12, peaks.tbps * 1e12) if peaks else plots.roofline([], 0.0, 0.0)
    )
    return (
        Plot("stage-breakdown", "Stage time breakdown", plots.stage_breakdown(stage_rows)),
        Plot("categories", "Kernel categories per stage", plots.category_breakdown(cat_rows, labels=LABELS)),
        Plot("decode-steps", "Decode step latency", plots.decode_latency(view.decode_steps)),
        Plot("timeline", "GPU busy over time", plots.gpu_timeline(view.timeline)),
        Plot("roofline", "Roofline", roof),
        Plot("pass-spread", "Per-pass spread", plots.pass_spread([(s.name, s.range_ns) for s in view.stages])),
    )


def short(name: str, width: int = 140) -> str:
    """A long (templated C++) kernel name cut to ``width`` characters."""
    return name if len(name) <= width else name[: width - 1] + "…"


def by_stage(
    rows: tuple[KernelView, ...], stages: Sequence[str] = (), kernels: bool = True
) -> list[tuple[str, list[tuple[KernelView, str]]]]:
    """Rows grouped by stage in pipeline order (vision, sam, clip, projector, prefill, decode; not the
    repeat/page containers nor decode_step, whose tables repeat), each with its display name: for
    kernels a short name that keeps the distinguishing part (distinct within the stage)."""
    groups: dict[str, list[KernelView]] = {}
    for r in rows:
        groups.setdefault(r.stage, []).append(r)
    out = []
    for stage in pipeline_stages([*stages, *groups]):
        part = groups.get(stage)
        if part:
            names = distinct_short_names([k.name for k in part], 110) if kernels else [k.name for k in part]
            out.append((stage, list(zip(part, names, strict=True))))
    return out


def render_html(view: ReportView, summary: summ.Summary | None = None, figures: tuple[Plot, ...] | None = None) -> str:
    """report.html as one string (self-contained); ``summary``/``figures`` reuse what is already rendered."""
    summary = summary or summ.build(view)
    figs = {p.id: p for p in (figures if figures is not None else render_plots(view))}
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            v=view,
            kernels=by_stage(view.kernels, [st.name for st in view.stages]),
            operators=by_stage(view.operators, [st.name for st in view.stages], kernels=False),
            s=summary,
            plots=figs,
            rules=summ.RULES,
            metric_formats={k: f for k, (_, f) in summ.METRICS.items()},
        )
    )


def render_facts_md(view: ReportView) -> str:
    """report.md's share of what report.html shows: run identity, time per pass and tokens/s (unprofiled and
    profiled), profiler overhead, memory, inputs (settings, pages with hashes, caveats)."""
    return environment().get_template("run_facts.md.j2").render(v=view)


def render_summary_md(view: ReportView, summary: summ.Summary | None = None) -> str:
    """summary.md: the stakeholder summary in plain Markdown."""
    summary = summary or summ.build(view)
    return environment().get_template("summary.md.j2").render(v=view, s=summary)


@attrs.frozen
class Rendered:
    """Everything the HTML outputs need, rendered once: plots, summary, report.html and summary.md texts."""

    plots: tuple[Plot, ...]
    summary: summ.Summary
    html: str
    summary_md: str

    def files(self) -> dict[str, str]:
        """Relative path -> text of each file (report.html, summary.md, plots/*.svg)."""
        return {
            rundir.REPORT_HTML: self.html,
            rundir.SUMMARY_MD: self.summary_md,
            **{f"{PLOTS_DIR}/{p.id}.svg": p.svg for p in self.plots},
        }


def render(view: ReportView, measured: Measurements | None = None) -> Rendered:
    """Render the plots and the summary once and both documents from them (``measured``: a what-if's gains)."""
    summary = summ.build(view, measured)
    figures = render_plots(view)
    return Rendered(figures, summary, render_html(view, summary, figures), render_summary_md(view, summary))


def write_all(
    out_dir: Path, texts: Mapping[str, str], build: Mapping[str, Callable[[Path], None]] | None = None
) -> list[Path]:
    """Write files into ``out_dir`` all or nothing: every one goes to a temp file first, all are renamed
    at the end; on any failure none replaces its target (and a directory made for them is removed).

    ``texts``: relative path -> text; ``build``: relative path -> a function writing the file at a path.
    """
    build = build or {}
    made = [d for d in {(out_dir / r).parent for r in [*build, *texts]} if not os.path.exists(d)]
    try:
        with ExitStack() as stack:
            for rel, fn in build.items():
                fn(stack.enter_context(atomic_path(out_dir / rel)))
            for rel, text in texts.items():
                stack.enter_context(atomic_path(out_dir / rel)).write_text(text, encoding="utf-8")
    except BaseException:
        for d in sorted(made, key=lambda d: len(d.parts), reverse=True):
            with suppress(OSError):
                d.rmdir()  # only when empty
        raise
    return [out_dir / r for r in [*build, *texts]]


def write(view: ReportView, out_dir: Path) -> list[Path]:
    """Write report.html, summary.md and plots/*.svg into ``out_dir`` (all or nothing); return the paths."""
    from dsocr.report.report_set import write_report_set

    return write_report_set(out_dir, render(view).files())


def write_for_analysis(
    doc: AnalysisDocument | Mapping[str, Any],
    out_dir: Path,
    run_dir: Path | None = None,
) -> list[Path]:
    """report.html, summary.md and plots/*.svg for an analysis document (typed, or ``Analysis.to_dict()``).

    ``run_dir`` (a capture's run directory) adds its manifest.json, timing.json and
    timing-baseline.json.
    """
    from dsocr.analyze.workload_from_run import read_run_files
    from dsocr.report.adapt import view_from_analysis

    files = read_run_files(run_dir) if run_dir is not None else None
    if files is None:
        return write(view_from_analysis(doc), out_dir)
    view = view_from_analysis(doc, manifest=files.manifest, timing=files.timing, baseline=files.baseline)
    return write(view, out_dir)
