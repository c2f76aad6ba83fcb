"""Per-device tables (dsocr.analyze.devices) on a hand-built CPU-only trace of two worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsocr.analyze.pipeline import run_analysis
from tracebuild import TraceBuilder


def _worker(b: TraceBuilder, pid: int, start: int, pages: list[tuple[int, int]]) -> None:
    """One worker: a capture range around repeat 0 > page (index, ns) > vision, prefill, decode."""
    t = b.thread(pid=pid, tid=pid)
    d = b.domain("dsocr", t)
    total = sum(ns for _, ns in pages)
    b.range(t, start - 10, start + total + 10, "capture", domain=d)
    b.range(t, start, start + total, "repeat", domain=d, payload=0)
    at = start
    for index, ns in pages:
        b.range(t, at, at + ns, "page", domain=d, payload=index)
        third = ns // 4
        b.range(t, at + 1, at + third, "vision", domain=d)
        b.range(t, at + third, at + 2 * third, "prefill", domain=d)
        b.range(t, at + 2 * third, at + ns - 1, "decode", domain=d)
        at += ns


@pytest.fixture
def two_workers(tmp_path: Path) -> Path:
    b = TraceBuilder()
    _worker(b, 10, 1_000, [(0, 4_000), (2, 4_000)])
    _worker(b, 20, 1_500, [(1, 6_000)])
    return b.write(tmp_path / "two.sqlite")


def test_cpu_workers(two_workers: Path) -> None:
    d = run_analysis([two_workers]).devices
    assert d is not None
    assert d.workers.select("worker", "pid", "device_id", "page_instances", "span_ns", "gpu_busy_ns").rows() == [
        (0, 10, None, 2, 8_000, None),
        (1, 20, None, 1, 6_000, None),
    ]
    page = d.balance.filter(d.balance["stage"] == "page").row(0, named=True)
    assert (page["slowest_worker"], page["fastest_worker"], page["slowest_ns"], page["fastest_ns"]) == (
        0,
        1,
        8_000,
        6_000,
    )
    assert page["ratio"] == pytest.approx(8 / 6) and page["mean_ratio"] == pytest.approx(6 / 4)
    assert d.throughput.select("workers", "devices", "page_instances", "span_ns").rows() == [(2, 0, 3, 8_000)]
    assert d.throughput["pages_per_s"].item() == pytest.approx(3 / 8e-6)
    assert d.stages.filter(d.stages["stage"] == "prefill")["instances"].to_list() == [2, 1]


def test_one_worker_has_no_device_tables(tmp_path: Path) -> None:
    b = TraceBuilder()
    _worker(b, 10, 1_000, [(0, 4_000), (1, 4_000)])
    assert run_analysis([b.write(tmp_path / "one.sqlite")]).devices is None
