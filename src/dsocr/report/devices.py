"""Report tables of a data-parallel trace (several workers: ``dsocr.analyze.devices``), for report.md
(from the frames) and report.html (from analysis.json's ``devices`` rows): the same columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsocr.analyze.devices import DeviceTables
from dsocr.report import view as V
from dsocr.report.model import Table, frac, ms, num, table

Cols = list[tuple[str, str, Callable[[Any], str]]]


def _ratio(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _rate(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _plain(v: Any) -> str:
    return "n/a" if v is None else str(v)


#: (key in DeviceTables / analysis.json devices, title, columns, note)
SPECS: tuple[tuple[str, str, Cols, str | None], ...] = (
    (
        "workers",
        "Workers",
        [
            ("worker", "worker", _plain),
            ("pid", "pid", num),
            ("device", "device_id", _plain),
            ("GPU", "gpu", _plain),
            ("page instances", "page_instances", num),
            ("span ms", "span_ns", ms),
            ("range ms", "range_ns", ms),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("GPU idle", "gpu_idle_frac", frac),
            ("pages/s", "pages_per_s", _rate),
        ],
        "One worker per process with stage ranges; its device is the one most of its GPU work ran on. "
        "Span: its first to its last outermost stage range; range and busy: summed over those ranges.",
    ),
    (
        "stages",
        "Stages per worker",
        [
            ("stage", "stage", str),
            ("worker", "worker", _plain),
            ("device", "device_id", _plain),
            ("instances", "instances", num),
            ("range ms", "cpu_ns", ms),
            ("mean ms", "cpu_ns_mean", ms),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("GPU idle", "gpu_idle_frac", frac),
        ],
        None,
    ),
    (
        "balance",
        "Load balance",
        [
            ("stage", "stage", str),
            ("workers", "workers", num),
            ("slowest", "slowest_worker", _plain),
            ("fastest", "fastest_worker", _plain),
            ("slowest ms", "slowest_ns", ms),
            ("fastest ms", "fastest_ns", ms),
            ("slowest / fastest", "ratio", _ratio),
            ("per instance", "mean_ratio", _ratio),
        ],
        "Slowest vs fastest worker by summed range time (1.00x = even); 'per instance' compares mean "
        "times, which discounts uneven shards (round-robin gives some workers one page more).",
    ),
    (
        "throughput",
        "Throughput of the whole set",
        [
            ("workers", "workers", num),
            ("devices", "devices", num),
            ("page instances", "page_instances", num),
            ("span ms", "span_ns", ms),
            ("pages/s", "pages_per_s", _rate),
        ],
        "Span: the first worker's first range to the last worker's last range.",
    ),
)


def _with_trace(cols: Cols, files: int) -> Cols:
    return [("trace", "file", num), *cols] if files > 1 else cols


def device_tables(d: DeviceTables, files: int) -> tuple[Table, ...]:
    """report.md: workers, stages per worker, load balance, throughput (a ``trace`` column with several files)."""
    return tuple(
        table(title, getattr(d, key), _with_trace(cols, files), note=note, limit=1000)
        for key, title, cols, note in SPECS
    )


def device_view_tables(devices: Mapping[str, Any] | None, files: int) -> tuple[tuple[str, V.Table], ...]:
    """report.html: the same tables from analysis.json's ``devices`` rows (empty without them)."""
    if not isinstance(devices, Mapping):
        return ()
    out = []
    for key, title, cols, _ in SPECS:
        rows: Sequence[Mapping[str, Any]] = devices.get(key) or []
        spec = _with_trace(cols, files)
        out.append(
            (
                title,
                V.Table(
                    columns=tuple(h for h, _, _ in spec),
                    rows=tuple(tuple(f(r.get(c)) for _, c, f in spec) for r in rows),
                ),
            )
        )
    return tuple(out)
