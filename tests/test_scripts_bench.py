"""benchmarks/bench_analyze.py: per-process peak memory, the Markdown table, the docs section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_analyze", REPO / "benchmarks" / "bench_analyze.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_analyze"] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_measure_reports_the_child_own_peak_and_exit_code() -> None:
    bench = _module()
    big = bench.measure([sys.executable, "-c", "b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096])"])
    small = bench.measure([sys.executable, "-c", "pass"])
    assert big.rc == 0 and small.rc == 0
    assert big.peak_mb > 290
    assert small.peak_mb < 100  # not the earlier, larger child's peak (RUSAGE_CHILDREN would give that)
    failed = bench.measure([sys.executable, "-c", "raise SystemExit(3)"])
    assert failed.rc == 3


def _case(bench: ModuleType) -> object:
    case = bench.Case("H100 fixture", "/x.sqlite", 17.7, {"CUPTI_ACTIVITY_KIND_KERNEL": 71440, "NVTX ranges": 30646})
    case.dsocr = [bench.Sample(0.6, 1.0, 300.0, 0), bench.Sample(0.5, 0.9, 310.0, 0), bench.Sample(0.9, 1.2, 305.0, 0)]
    case.nvidia = {
        "nvtx_gpu_proj_sum": [bench.Sample(1.0, 1.0, 70.0, 0), bench.Sample(1.2, 1.0, 72.0, 0)],
        "cuda_gpu_kern_sum": [bench.Sample(0.2, 0.2, 50.0, 0), bench.Sample(0.4, 0.2, 52.0, 0)],
    }
    return case


def test_table_uses_medians_and_ratios() -> None:
    bench = _module()
    row = bench.table([_case(bench)]).splitlines()[2]
    # dsocr median 0.6 s; NVIDIA 1.1 + 0.3 = 1.4 s; peaks: 305 vs max(71, 51)
    assert row.startswith("| H100 fixture | 18 MB | 71,440 | 0 | 30,646 | 0.60 | 1.10 | 0.30 | 1.40 | **0.43** |")
    assert row.endswith("| 305 | 71 | 4.30 |")


def test_write_docs_replaces_only_its_own_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _module()
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Capture\n\nsomeone else's numbers\n")
    monkeypatch.setattr(bench, "DOCS", docs)
    bench.write_docs("first\n")
    bench.write_docs("second\n")
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\n## Capture\n\nsomeone else's numbers\n\n## Analyzer")
    assert text.count(bench.BEGIN) == 1
    assert "second\n" in text and "first" not in text
    docs.write_text(text + "\n## Later section\n\nkept\n")
    bench.write_docs("third\n")
    assert docs.read_text().endswith("third\n" + bench.END + "\n\n## Later section\n\nkept\n")
