"""The document object behind ``report.md``: titled tables of preformatted cells.

:func:`build_document` turns an :class:`~dsocr.analyze.analysis.Analysis` into a
:class:`Document`; the jinja2 template only lays it out (no computing in templates).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import polars as pl

from dsocr.analyze import nesting
from dsocr.analyze import op_memory as op_mem
from dsocr.analyze.analysis import Analysis, TraceResult
from dsocr.analyze.categories import LABELS
from dsocr.contract import nvtx_names as nv
from dsocr.model import workloads

Fmt = Callable[[Any], str]


@attrs.frozen
class Table:
    """A table: a title, an optional note, headers and rows of strings."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str | None = None


@attrs.frozen
class Document:
    """Everything ``report.md`` shows."""

    title: str
    facts: tuple[tuple[str, str], ...]  #: (label, value) lines about the traces
    warnings: tuple[str, ...]
    sections: tuple[tuple[str, tuple[Table, ...]], ...]  #: (heading, tables)
    preamble: str = ""  #: Markdown shown right after the facts (the stakeholder summary and plots)


def ms(v: Any) -> str:
    """ns -> milliseconds with 3 decimals (``n/a`` for missing)."""
    return "n/a" if v is None else f"{v / 1e6:,.3f}"


def num(v: Any) -> str:
    """An integer with thousands separators, or a float with 1 decimal."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}"


def pct(v: Any) -> str:
    """A percentage (value already in 0..100)."""
    return "n/a" if v is None else f"{v:.1f}%"


#: Percentages smaller than this print as 0.0% (what is left of an exact zero after float rounding).
FRAC_ZERO_PCT = 1e-6


def frac(v: Any) -> str:
    """A fraction in 0..1 as a percentage: one decimal, or two significant digits below 1%
    (0.00048 -> ``0.048%``), so a small value never reads ``0.0%``; below 1e-6 % (float rounding
    of an exact zero, e.g. the CV of identical values) it is ``0.0%``."""
    if v is None or not math.isfinite(v):
        return "n/a"
    p = 100 * v
    if abs(p) < FRAC_ZERO_PCT:
        return "0.0%"
    if abs(p) >= 1:
        return f"{p:.1f}%"
    return f"{p:.{1 - math.floor(math.log10(abs(p)))}f}%"


def text(v: Any, width: int = 90) -> str:
    """A string, cut to ``width`` characters, with Markdown table pipes escaped."""
    if v is None:
        return ""
    s = str(v).replace("|", "\\|")
    return s if len(s) <= width else s[: width - 1] + "…"


_NAMESPACES = re.compile(r"\b(?:[A-Za-z_]\w*::)+")
_ANONYMOUS = re.compile(r"<unnamed>::|\(anonymous namespace\)::")
_HINTS = re.compile(
    r"[A-Za-z_]\w*(?:Functor\w*|Ops\b|_kernel\w*|_cuda\b|KernelImpl\b)|\w*GemmUniversal\w*|\w+_[sdhb]?\d*gemm_\w+"
)
_GENERIC = frozenset(
    {
        "gpu_kernel_impl",
        "gpu_kernel_impl_nocast",
        "BinaryFunctor",
        "AUnaryFunctor",
        "BUnaryFunctor",
        "func_wrapper_t",
        "enable_3x_kernel_for_sm9x",
    }
)


def short_kernel_name(name: Any, width: int = 90, hints: int = 2) -> str:
    """A readable kernel name for tables: the function without namespaces, plus the one or two
    (``hints``) telling names from its template arguments (``elementwise_kernel<MulFunctor>``).

    Reports keep the full demangled name in analysis.json and results.sqlite.
    """
    if name is None:
        return ""
    full = _ANONYMOUS.sub("", str(name)).removeprefix("void ")
    base, sep, args = full.partition("<")
    short = _NAMESPACES.sub("", base.split("(")[0]) or full
    if sep:
        found = [h for h in dict.fromkeys(_HINTS.findall(args)) if h not in _GENERIC and h != short]
        if found:
            short = f"{short}<{', '.join(found[:hints])}>"
    return text(short, width)


def distinct_short_names(names: Sequence[Any], width: int = 90) -> list[str]:
    """Short names (:func:`short_kernel_name`) that never make two different kernels read the same:
    a clash gets every telling template name, and one that remains is numbered (``#2``, ``#3``)."""
    out = [short_kernel_name(n, width) for n in names]
    full = [str(n) for n in names]
    for i, s in enumerate(out):
        if any(out[j] == s and full[j] != full[i] for j in range(len(out)) if j != i):
            out[i] = short_kernel_name(names[i], width, hints=99)
    seen: dict[str, list[str]] = {}
    for i, s in enumerate(out):
        kinds = seen.setdefault(s, [])
        if full[i] not in kinds:
            kinds.append(full[i])
        k = kinds.index(full[i])
        if k:
            out[i] = f"{s} #{k + 1}"
    return out


def _kernel_names(df: pl.DataFrame, col: str = "name") -> pl.DataFrame:
    """``df`` with a ``short_name`` column (distinct per full name) beside ``col``."""
    if col not in df.columns or df.is_empty():
        return df
    return df.with_columns(pl.Series("short_name", distinct_short_names(df[col].to_list()), dtype=pl.Utf8))


def _label(v: Any) -> str:
    """A kernel category's display label (the one label table, analyze.categories.LABELS)."""
    return "" if v is None else LABELS.get(str(v), str(v))


def bytes_(v: Any) -> str:
    """Bytes in MiB."""
    return "n/a" if v is None else f"{v / 2**20:,.1f} MiB"


def table(
    title: str, df: pl.DataFrame, cols: Sequence[tuple[str, str, Fmt]], note: str | None = None, limit: int = 50
) -> Table:
    """Build a :class:`Table` from ``df`` with (header, column, formatter) triples."""
    present = [(h, c, f) for h, c, f in cols if c in df.columns]
    rows = tuple(tuple(f(row[c]) for _, c, f in present) for row in df.head(limit).iter_rows(named=True))
    return Table(title, tuple(h for h, _, _ in present), rows, note)


def _basis(a: Analysis) -> str:
    """How a table's numbers add up over the passes."""
    n = a.repeats.passes
    return "total over 1 pass" if n == 1 else f"total over {n} passes"


def _gpu(a: Analysis) -> bool:
    """Whether the stages have GPU numbers: CUDA traced, and no trace lost what ties it to the stages."""
    return any(t.info.has_cuda for t in a.traces) and not any(t.info.gpu_lost for t in a.traces)


def _no_gpu(a: Analysis, untraced: str = "no GPU activity traced") -> str:
    """Why the stages have no GPU numbers (``untraced`` when no CUDA was traced)."""
    if any(t.info.gpu_lost for t in a.traces):
        return "the trace lost the records that tie GPU work to the stages"
    return untraced


def _stage_tables(a: Analysis) -> tuple[Table, ...]:
    s = a.stages
    if not _gpu(a):
        cpu_only = table(
            f"Stages (CPU side only: {_no_gpu(a)}; {_basis(a)})",
            s,
            [
                ("stage", "stage", text),
                ("instances", "instances", num),
                ("CPU ms", "cpu_ns", ms),
                ("CPU ms/instance", "cpu_ns_mean", ms),
            ],
        )
        return (cpu_only, *_nesting_table(a, cuda=False))
    main = table(
        f"Stages ({_basis(a)})",
        s,
        [
            ("stage", "stage", text),
            ("instances", "instances", num),
            ("CPU ms", "cpu_ns", ms),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("GPU idle", "gpu_idle_frac", frac),
            ("GPU span ms", "gpu_span_ns", ms),
            ("kernels", "kernels", num),
            ("launches", "launches", num),
            ("syncs", "syncs", num),
            ("D2H copies", "d2h_copies", num),
        ],
        note="CPU ms: NVTX range time; GPU busy: union of the GPU intervals of the work launched inside; "
        "idle = 1 - busy/CPU.",
    )
    mem = table(
        f"Copies and memsets ({_basis(a)})",
        s,
        [
            ("stage", "stage", text),
            ("memcpys", "memcpys", num),
            ("HtoD", "h2d_bytes", bytes_),
            ("DtoH", "d2h_bytes", bytes_),
            ("DtoD", "d2d_bytes", bytes_),
            ("PtoP", "p2p_bytes", bytes_),
            ("memsets", "memsets", num),
            ("memset bytes", "memset_bytes", bytes_),
        ],
    )
    tables = [main, *_nesting_table(a), mem]
    if "decode_steps" in s.columns:
        dec = s.filter(pl.col("decode_steps") > 0)
        if dec.height:
            tables.append(
                table(
                    "Per decode step (mean over every step of every pass)",
                    dec,
                    [
                        ("stage", "stage", text),
                        ("steps", "decode_steps", num),
                        ("CPU ms/step", "cpu_ns_per_step", ms),
                        ("GPU busy ms/step", "gpu_busy_ns_per_step", ms),
                        ("launches/step", "launches_per_step", num),
                        ("kernels/step", "kernels_per_step", num),
                        ("syncs/step", "syncs_per_step", num),
                        ("D2H/step", "d2h_copies_per_step", num),
                    ],
                )
            )
    return tuple(tables)


def _nested(a: Analysis) -> bool:
    """Whether vision ran inside prefill in the traces (prefill has exclusive columns)."""
    return nesting.excl("cpu_ns") in a.stages.columns


def _nesting_table(a: Analysis, cuda: bool = True) -> tuple[Table, ...]:
    """Where vision ran inside prefill: prefill inclusive, vision, prefill exclusive (= inclusive - vision)."""
    if not _nested(a):
        return ()
    s = a.stages
    host, guest = s.filter(pl.col("stage") == nesting.HOST), s.filter(pl.col("stage") == nesting.GUEST)
    metrics = [*nesting.EXCL_METRICS, "gpu_idle_frac"] if cuda else ["cpu_ns"]
    own = host.select(
        pl.lit(f"{nesting.HOST} (exclusive)").alias("stage"),
        "instances",
        *[pl.col(nesting.excl(m)).alias(m) for m in metrics],
    )
    rows = pl.concat(
        [
            host.select(pl.lit(f"{nesting.HOST} (inclusive)").alias("stage"), "instances", *metrics),
            guest.select("stage", "instances", *metrics),
            own,
        ],
        how="vertical_relaxed",
    )
    return (
        table(
            f"Prefill with and without vision ({_basis(a)})",
            rows,
            [
                ("stage", "stage", text),
                ("instances", "instances", num),
                ("CPU ms", "cpu_ns", ms),
                ("GPU busy ms", "gpu_busy_ns", ms),
                ("GPU idle", "gpu_idle_frac", frac),
                ("kernel ms", "kernel_ns", ms),
                ("kernels", "kernels", num),
                ("launches", "launches", num),
                ("syncs", "syncs", num),
                ("D2H copies", "d2h_copies", num),
            ],
            note=f"{nesting.NOTE[0].upper()}{nesting.NOTE[1:]}. Exclusive = inclusive - the vision ranges inside "
            "prefill, for each column (GPU busy: the time the GPU ran prefill's own work while no vision work ran); "
            "every other table shows prefill inclusive, except the analytic model's, which uses the exclusive "
            "times (its prefill FLOPs exclude vision).",
        ),
    )


def _per_stage(a: Analysis, df: pl.DataFrame, title: str, cols: Sequence[tuple[str, str, Fmt]]) -> tuple[Table, ...]:
    out = []
    for stage in pipeline_stages(a.stages["stage"].to_list()):
        part = df.filter(pl.col("stage") == stage)
        if part.height:
            out.append(table(f"{title}: {stage} ({_basis(a)})", part, cols))
    return tuple(out)


def pipeline_stages(names: Sequence[str]) -> list[str]:
    """The stages worth a per-stage table, in pipeline order (vision, sam, clip, projector, prefill, decode):
    not the repeat/page containers nor decode_step, which repeat their children's or decode's tables."""
    skip = {nv.REPEAT, nv.PAGE} | ({nv.DECODE_STEP} if nv.DECODE in names else set())
    order = {n: i for i, n in enumerate(nv.STAGES)}
    return sorted((n for n in dict.fromkeys(names) if n not in skip), key=lambda n: order.get(n, len(order)))


#: The repeat-spread rows of report.md: (stats table, metric) -> (label, formatter of its values).
_SPREAD_METRICS: dict[str, tuple[str, Fmt]] = {
    "cpu_ns": ("range ms", ms),
    "gpu_busy_ns": ("GPU busy ms", ms),
    "mfu_busy": ("MFU busy", frac),
    "mfu_wall": ("MFU wall", frac),
}


def _verdict(v: Any) -> str:
    return "n/a (1 pass)" if v is None else ("yes" if v else "NO")


def _repeat_table(a: Analysis) -> Table:
    """Per stage and metric (range and GPU busy time, MFU): the mean over the passes, the spread of single
    passes (stddev, CV, largest deviation), the standard error of the mean and the +/-10% verdict."""
    cuda = _gpu(a)
    wanted = ["cpu_ns", *(["gpu_busy_ns"] if cuda else [])]
    times = a.repeats.stats.filter(pl.col("metric").is_in(wanted))
    mfu = a.analytic.mfu_spread if a.analytic is not None else pl.DataFrame()
    frames = [
        times.select("stage", "metric", "passes", "mean", "stddev", "cv", "max_dev", "sem", "sem_rel", "within_limit")
    ]
    if not mfu.is_empty():
        frames.append(mfu.select(frames[0].columns))
    long = pl.concat(frames, how="vertical_relaxed")
    order = {n: i for i, n in enumerate([*a.stages["stage"].to_list(), "model"])}
    metric_order = {m: i for i, m in enumerate(_SPREAD_METRICS)}
    rows = []
    for r in sorted(long.iter_rows(named=True), key=lambda r: (order.get(r["stage"], 99), metric_order[r["metric"]])):
        label, fmt = _SPREAD_METRICS[r["metric"]]
        rows.append(
            (
                text(r["stage"]),
                label,
                num(r["passes"]),
                fmt(r["mean"]),
                fmt(r["stddev"]),
                frac(r["cv"]),
                frac(r["max_dev"]),
                fmt(r["sem"]),
                frac(r["sem_rel"]),
                _verdict(r["within_limit"]),
            )
        )
    n = a.repeats.passes
    note = (
        f"Per pass, over {n} passes. One pass: stddev and CV (stddev / mean), and the largest deviation of a single "
        f"pass from the mean; the mean of the {n} passes: its standard error (stddev / sqrt({n})), absolute and "
        "relative. within ±10% = every pass within 10% of the mean (docs/metrics.md). MFU here is each pass's own "
        "(FLOPs / (peak x that pass's time)); the MFU table's figure is FLOPs / (peak x mean time)."
        + ("" if cuda else f" No GPU busy time or MFU: {_no_gpu(a, 'no CUDA traced')}.")
    )
    headers = (
        "stage",
        "metric",
        "passes",
        "mean",
        "stddev (1 pass)",
        "CV (1 pass)",
        "largest deviation (1 pass)",
        "std. error (mean)",
        "std. error %",
        "within ±10%",
    )
    return Table(
        f"Spread over {n} passes (per pass, mean of {n}): single passes vs their mean", headers, tuple(rows), note
    )


def _sci(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3e}"


def _ratio(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _pass_work(a: Analysis) -> str:
    """What one pass holds: pages of a dsocr run, or instances of the given workload in a foreign trace."""
    an = a.analytic
    n = an.doc.get("pages_per_pass") if an is not None else None
    if an is not None and an.doc.get("workload_source") == "flags":
        return f"{n} instance(s) of the --mode/--prefill-tokens workload"
    return f"{n} page(s)"


def _peak_text(a: Analysis) -> str:
    """``peak 989.4 TFLOP/s, 3.35 TB/s (source)``, or why there is none."""
    peak = (a.analytic.doc.get("peak") if a.analytic is not None else None) or {}
    if peak.get("tflops") and peak.get("tbps"):
        return f"peak {peak['tflops']} TFLOP/s, {peak['tbps']} TB/s ({peak.get('source')})"
    if not _gpu(a):
        return f"peak n/a ({_no_gpu(a, 'no CUDA traced')})"
    return "peak n/a (unknown GPU: give --peak-tflops and --peak-tbps)"


#: The capture warm-up pass's range in the NVTX projection (docs/nvtx-contract.md: ``warmup``, domain dsocr).
WARMUP_RANGE = nv.qualified(nv.WARMUP)


def _warmup_ns(t: TraceResult) -> int | None:
    """The projected GPU span of the trace's capture warm-up range (NVIDIA's nvtx_gpu_proj_sum: first GPU op
    start to last GPU op end; ``None`` when it has none)."""
    p = t.nvtx_projection
    if p.is_empty() or "range" not in p.columns:
        return None
    row = p.filter(pl.col("range") == WARMUP_RANGE)
    return int(row["total_proj_ns"].sum()) if row.height else None


def _warmup_title(t: TraceResult) -> str:
    return ", the capture warm-up pass included" if _warmup_ns(t) is not None else ""


def _warmup_note(t: TraceResult) -> str:
    """Why the whole-file kernel table differs from the per-stage ones, when the trace holds a warm-up pass."""
    w = _warmup_ns(t)
    if w is None:
        return ""
    return (
        f"As NVIDIA's cuda_gpu_kern_sum, this counts every kernel of the file, the capture warm-up pass "
        f"(`{WARMUP_RANGE}`, --capture-warmup; projected onto the GPU it spans {ms(w)} ms) included; the per-stage "
        "Top kernels tables above count the repeats only. "
    )


def _context_text(a: Analysis) -> str:
    """``decode context auto (706 to 713 tokens per step)``: the ``--context`` mode the decode FLOPs are counted at."""
    doc = a.analytic.doc if a.analytic is not None else {}
    work = doc.get("workload") or {}
    ctx = work.get("decode_context") or {}
    first = " of the first page" if (doc.get("pages_per_pass") or 1) > 1 else ""
    span = f" ({ctx['first']:,} to {ctx['last']:,} tokens per step{first})" if ctx.get("first") else ""
    return f"decode context {work.get('context_mode', 'auto')}{span}"


def _analytic_sections(a: Analysis) -> list[tuple[str, tuple[Table, ...]]]:
    """MFU/MBU per stage (analytic model vs measured), module attribution, GPU idle gaps."""
    out: list[tuple[str, tuple[Table, ...]]] = []
    an = a.analytic
    if an is not None and not an.metrics.is_empty():
        note = (
            f"Per pass, mean of {a.repeats.passes} pass(es) ({_pass_work(a)}); MFU = FLOPs of a pass / (peak x mean "
            f"time), the ratio of means; {_peak_text(a)}; {_context_text(a)}. busy = GPU busy time, wall = the "
            "stage's NVTX range; "
            "predicted = roofline max(FLOPs/peak, bytes/bandwidth). Stages with no work in this workload are left out."
        )
        if _nested(a):
            note += (
                " Vision ran inside prefill: prefill's times are exclusive of vision (prefill - vision), as its "
                "FLOPs are; the model row adds vision, exclusive prefill and decode, each once."
            )
        cols: list[tuple[str, str, Fmt]] = [
            ("stage", "stage", text),
            ("FLOPs", "flops", _sci),
            ("bytes", "bytes", _sci),
            ("FLOP/byte", "intensity", lambda v: "n/a" if v is None else f"{v:,.1f}"),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("wall ms", "wall_ns", ms),
            ("predicted ms", "predicted_ns", ms),
            ("bound", "bound", text),
            ("busy / predicted", "ratio_busy", _ratio),
            ("MFU busy", "mfu_busy", frac),
            ("MFU wall", "mfu_wall", frac),
            ("MBU busy", "mbu_busy", frac),
            ("MBU wall", "mbu_wall", frac),
        ]
        cal = an.doc.get("calibration")
        if cal:
            at = cols.index(("bound", "bound", text))
            cols[at + 2 : at + 2] = [
                ("calibrated ms", "calibrated_ns", ms),
                ("busy / calibrated", "ratio_calibrated", _ratio),
            ]
            note += (
                f" calibrated = sum of the stage's primitives timed alone on {cal.get('gpu')} ({cal.get('source')}, "
                f"{cal.get('kernels')} signatures, {cal.get('missing')} of {cal.get('required')} needed missing: "
                "roofline used for those)."
            )
        rows = an.metrics.filter((pl.col("flops") > 0) | (pl.col("bytes") > 0) | pl.col("gpu_busy_ns").is_not_null())
        out.append(("Analytic model: MFU and MBU per stage", (table("Stage metrics", rows, cols, note=note),)))
    elif an is not None and an.doc.get("reason"):
        out.append(("Analytic model: MFU and MBU per stage", (Table(str(an.doc["reason"]), (), ()),)))
    m = a.modules
    if m is not None:
        share = "n/a" if m.share is None else f"{100 * m.share:.1f}%"
        note = (
            f"GPU busy time inside named module ranges: {share} of the pass's GPU busy time "
            f"(target >= 90%; the rest is unattributed). Per pass, mean over {m.passes} pass(es); "
            "measured = GPU busy of the ops launched inside the module's ranges; predicted = the sum of its "
            "operations' roofline times."
        )
        rows = m.table.filter(pl.col("measured_ns").is_not_null()) if "measured_ns" in m.table.columns else m.table
        mod_cols: list[tuple[str, str, Fmt]] = [
            ("module", "path", text),
            ("calls", "calls", num),
            ("measured ms", "measured_ns", ms),
            ("self ms", "self_ns", ms),
            ("predicted ms", "predicted_ops_ns", ms),
            ("measured / predicted", "ratio", _ratio),
        ]
        if "calibrated_ns" in rows.columns and rows["calibrated_ns"].is_not_null().any():
            mod_cols += [("calibrated ms", "calibrated_ns", ms), ("measured / calibrated", "ratio_calibrated", _ratio)]
            note += " calibrated = the sum of its primitives timed alone (calibration.json)."
        mem_cols: list[tuple[str, str, Fmt]] = [
            ("weights (analytic)", "weight_footprint_bytes", bytes_),
            ("activations peak (analytic)", "act_peak_bytes", bytes_),
        ]
        if "weight_footprint_bytes" in rows.columns:
            note += (
                " Memory estimate (analytic): the weights the module holds (parameters x dtype bytes) and the "
                "largest activation working set of one of its operations (inputs + outputs); not measured."
            )
        tables = [
            table(
                "Measured vs predicted GPU time per module",
                rows,
                [*mod_cols, *mem_cols, ("FLOPs", "flops", _sci)],
                note=note,
                limit=200,
            )
        ]
        if not m.categories.is_empty():
            tables.append(
                table(
                    "Kernel categories per module",
                    m.categories,
                    [
                        ("module", "path", text),
                        ("category", "category", _label),
                        ("kernels", "kernels", num),
                        ("kernel ms", "kernel_ns", ms),
                        ("share", "share", frac),
                    ],
                    note=f"Per pass, mean over {m.passes} pass(es): the kernels launched inside the module's ranges "
                    "(its children's included) by category, their summed time and its share of the module's kernel "
                    "time.",
                    limit=400,
                )
            )
        out.append(("Modules", tuple(tables)))
    if not a.idle_gaps.is_empty():
        out.append(
            (
                "GPU idle gaps",
                (
                    table(
                        "Longest gaps between consecutive GPU ops, per stage",
                        a.idle_gaps,
                        [
                            ("stage", "stage", text),
                            ("repeat", "repeat", num),
                            ("page", "page", num),
                            ("at ms", "start_ns", ms),
                            ("gap ms", "duration_ns", ms),
                        ],
                        note="The innermost stage holding the gap; `at` is from the start of the trace's first "
                        "stage range (not from the trace's start).",
                        limit=30,
                    ),
                ),
            )
        )
    return out


def _joined_memory_cols(a: Analysis) -> list[tuple[str, str, Fmt]]:
    """The allocator's columns of the top-operators tables (with op_memory.json)."""
    if a.op_memory is None or op_mem.JOINED[0] not in a.operators.columns:
        return []
    return [("alloc", op_mem.JOINED[0], bytes_), ("allocs", op_mem.JOINED[1], num)]


def _op_memory_sections(a: Analysis) -> list[tuple[str, tuple[Table, ...]]]:
    """``Operator memory (allocator)``: per stage its bytes and peak, then its top operators by bytes."""
    mem = a.op_memory
    if mem is None:
        return []
    stages = table(
        f"Per stage ({mem.device}, one pass)",
        mem.stages,
        [
            ("stage", "stage", text),
            ("instances", "instances", num),
            ("allocated", "allocated_bytes", bytes_),
            ("allocations", "allocations", num),
            ("freed in ops", "freed_bytes", bytes_),
            ("peak", "peak_bytes", bytes_),
            ("peak rise", "peak_increase_bytes", bytes_),
        ],
        note=f"What is measured: {mem.measures}. Peak rise: the most the stage raised allocated memory above its "
        "start. Operators are attributed to their innermost stage.",
    )
    ops = tuple(
        table(f"Top operators by allocated bytes: {stage}", part, _OP_MEMORY_COLS)
        for stage in mem.stages["stage"].to_list()
        if (part := mem.operators.filter(pl.col("stage") == stage)).height
    )
    return [("Operator memory (allocator)", (stages, *ops))]


_OP_MEMORY_COLS: list[tuple[str, str, Fmt]] = [
    ("#", "rank", num),
    ("operator", "operator", text),
    ("calls", "calls", num),
    ("allocations", "allocations", num),
    ("allocated", "allocated_bytes", bytes_),
    ("freed in op", "freed_bytes", bytes_),
]


def build_document(a: Analysis, title: str = "dsocr analysis", top_ranges: int = 30) -> Document:
    """Turn an analysis into the report document."""
    facts: list[tuple[str, str]] = []
    for t in a.traces:
        i = t.info
        gpu = ", ".join(str(g["name"]) for g in i.gpus) or "none traced"
        facts.append(
            (
                f"trace {i.file}",
                f"nsys {i.product_version}, schema {i.schema_version}, GPU {gpu}, stages: {i.stage_mode}",
            )
        )
    if _nested(a):
        facts.append(("stage nesting", nesting.NOTE))
    if a.run is not None and a.run.manifest is not None:
        settings = a.run.manifest.settings
        named = workloads.label(a.run.manifest.workload, settings.to_json() if settings is not None else None)
        if named:
            facts.insert(0, ("workload", named))
    facts.append(("passes", str(a.repeats.passes)))
    if a.op_memory is None and a.run is not None and a.run.is_run:
        facts.append(("operator memory", op_mem.HOW_TO))
    cats = a.categories.with_columns(pl.col("category").replace(LABELS).alias("label"))
    cuda = _gpu(a)
    sections: list[tuple[str, tuple[Table, ...]]] = [("Stages", _stage_tables(a))]
    if cuda:
        sections += [
            (
                "Kernel time by category",
                _per_stage(
                    a,
                    cats,
                    "Categories",
                    [
                        ("category", "label", text),
                        ("kernels", "kernels", num),
                        ("ms", "total_ns", ms),
                        ("share", "pct", pct),
                    ],
                ),
            ),
            (
                "Top kernels",
                _per_stage(
                    a,
                    _kernel_names(a.top_kernels),
                    "Top kernels",
                    [
                        ("#", "rank", num),
                        ("kernel", "short_name", text),
                        ("category", "category", _label),
                        ("instances", "instances", num),
                        ("ms", "total_ns", ms),
                        ("share", "pct", pct),
                    ],
                ),
            ),
        ]
    if a.operators.height:
        sections.append(
            (
                "Top operators (emit_nvtx ranges)",
                _per_stage(
                    a,
                    a.operators,
                    "Top operators",
                    [
                        ("#", "rank", num),
                        ("operator", "operator", text),
                        ("input shapes", "input_shapes", lambda v: text(v, 60)),
                        ("calls", "calls", num),
                        ("kernels", "kernels", num),
                        ("GPU ms", "gpu_ns", ms),
                        ("share", "pct", pct),
                        *_joined_memory_cols(a),
                    ],
                ),
            )
        )
    sections += _op_memory_sections(a)
    rep = a.repeats
    if rep.passes > 1:
        sections.append(("Repeats", (_repeat_table(a),)))
    if a.devices is not None:  # a data-parallel trace: several workers
        from dsocr.report.devices import device_tables

        sections.append(("Devices (data-parallel workers)", device_tables(a.devices, len(a.traces))))
    sections += _analytic_sections(a)
    first = a.traces[0]
    proj = first.nvtx_projection.sort("total_proj_ns", descending=True)
    if not cuda:
        return Document(title=title, facts=tuple(facts), warnings=a.warnings, sections=tuple(sections))
    sections.append(
        (
            "NVTX ranges projected onto the GPU",
            (
                table(
                    f"Top {top_ranges} ranges by projected GPU time ({first.info.file})",
                    proj,
                    [
                        ("range", "range", lambda v: text(v, 70)),
                        ("style", "style", text),
                        ("instances", "instances", num),
                        ("proj ms", "total_proj_ns", ms),
                        ("range ms", "total_range_ns", ms),
                        ("GPU ops", "gpu_ops", num),
                    ],
                    limit=top_ranges,
                ),
                table(
                    f"Top {top_ranges} kernels ({first.info.file}; total over the file{_warmup_title(first)})",
                    _kernel_names(first.kernels.sort("total_ns", descending=True).head(top_ranges)),
                    [
                        ("kernel", "short_name", text),
                        ("instances", "instances", num),
                        ("total ms", "total_ns", ms),
                        ("avg µs", "avg_ns", lambda v: "n/a" if v is None else f"{v / 1e3:,.1f}"),
                    ],
                    note=_warmup_note(first) + "Short names keep the telling part of the C++ name (two kernels "
                    "never share one: a clash gets `#2`); the full demangled names are in analysis.json (`kernels`) "
                    "and results.sqlite.",
                    limit=top_ranges,
                ),
            ),
        )
    )
    return Document(title=title, facts=tuple(facts), warnings=a.warnings, sections=tuple(sections))
