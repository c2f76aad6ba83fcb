"""report.md tables of a data-parallel trace (several workers: ``dsocr.analyze.devices``)."""

from __future__ import annotations

from typing import Any

from dsocr.analyze.devices import DeviceTables
from dsocr.report.model import Table, frac, ms, num, table


def _ratio(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _rate(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _worker(v: Any) -> str:
    return "n/a" if v is None else str(v)


def device_tables(d: DeviceTables, files: int) -> tuple[Table, ...]:
    """Workers, per-worker stages, load balance and throughput (a ``trace`` column with several files)."""
    trace = [("trace", "file", num)] if files > 1 else []
    workers = table(
        "Workers",
        d.workers,
        [
            *trace,
            ("worker", "worker", _worker),
            ("pid", "pid", num),
            ("device", "device_id", _worker),
            ("GPU", "gpu", lambda v: "n/a" if v is None else str(v)),
            ("page instances", "page_instances", num),
            ("span ms", "span_ns", ms),
            ("range ms", "range_ns", ms),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("GPU idle", "gpu_idle_frac", frac),
            ("pages/s", "pages_per_s", _rate),
        ],
        note="One worker per process with stage ranges; its device is the one most of its GPU work ran on. "
        "Span: its first to its last outermost range; range and busy: summed over those ranges.",
        limit=1000,
    )
    stages = table(
        "Stages per worker",
        d.stages,
        [
            *trace,
            ("stage", "stage", str),
            ("worker", "worker", _worker),
            ("device", "device_id", _worker),
            ("instances", "instances", num),
            ("range ms", "cpu_ns", ms),
            ("mean ms", "cpu_ns_mean", ms),
            ("GPU busy ms", "gpu_busy_ns", ms),
            ("GPU idle", "gpu_idle_frac", frac),
        ],
        limit=1000,
    )
    balance = table(
        "Load balance",
        d.balance,
        [
            *trace,
            ("stage", "stage", str),
            ("workers", "workers", num),
            ("slowest", "slowest_worker", _worker),
            ("fastest", "fastest_worker", _worker),
            ("slowest ms", "slowest_ns", ms),
            ("fastest ms", "fastest_ns", ms),
            ("slowest / fastest", "ratio", _ratio),
            ("per instance", "mean_ratio", _ratio),
        ],
        note="Slowest vs fastest worker by summed range time (1.00x = even); 'per instance' compares mean "
        "times, which discounts uneven shards (round-robin gives some workers one page more).",
        limit=1000,
    )
    throughput = table(
        "Throughput of the whole set",
        d.throughput,
        [
            *trace,
            ("workers", "workers", num),
            ("devices", "devices", num),
            ("page instances", "page_instances", num),
            ("span ms", "span_ns", ms),
            ("pages/s", "pages_per_s", _rate),
        ],
        note="Span: the first worker's first range to the last worker's last range.",
    )
    return workers, stages, balance, throughput
