"""GPU peaks: the table of docs/gpu-peaks, robust name matching, overrides, unknown GPUs."""

from __future__ import annotations

import pytest

from dsocr.analytic.peaks import match_gpu, resolve_peak
from dsocr.contract.errors import BadInput


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),  # the name the H100 fixture's TARGET_INFO_GPU holds
        ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
        ("NVIDIA H100 NVL", "H100 NVL 94GB"),
        ("nvidia h100 94gb", "H100 NVL 94GB"),
        ("NVIDIA H200", "H200 141GB"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090"),
        ("NVIDIA B200", "B200"),
    ],
)
def test_known_names(name: str, entry: str) -> None:
    row, notes = match_gpu(name)
    assert row is not None and row.name == entry
    assert notes == ()


@pytest.mark.parametrize("name", ["NVIDIA L40", "NVIDIA GH200 480GB", "Tesla T4", "AMD Instinct MI300X"])
def test_unknown_names_do_not_match_a_neighbour(name: str) -> None:
    assert match_gpu(name) == (None, ())


def test_assumptions_are_noted() -> None:
    row, notes = match_gpu("NVIDIA H100")
    assert row is not None and row.name == "H100 SXM5 80GB"
    assert notes == ("'NVIDIA H100' does not say its form factor or memory; assumed H100 SXM5 80GB",)
    row, notes = match_gpu("NVIDIA A100 80GB PCIe")
    assert row is not None and row.name == "A100 SXM4 80GB"
    assert notes == ("form factor pcie not in the table; using A100 SXM4 80GB",)


def test_h100_peak_from_table() -> None:
    peak = resolve_peak("NVIDIA H100 80GB HBM3")
    assert (peak.tflops, peak.tbps) == (989.4, 3.35)
    assert peak.source == "table: H100 SXM5 80GB"
    assert peak.flops_per_s == pytest.approx(989.4e12)
    assert peak.known


def test_user_figures_win() -> None:
    peak = resolve_peak("NVIDIA H100 80GB HBM3", tflops=800.0)
    assert (peak.tflops, peak.tbps) == (800.0, 3.35)
    assert peak.source == "FLOP/s user (--peak-tflops); bandwidth table: H100 SXM5 80GB"
    only_user = resolve_peak(None, tflops=100.0, tbps=1.0)
    assert (only_user.tflops_source, only_user.tbps_source) == ("user (--peak-tflops)", "user (--peak-tbps)")
    assert (only_user.tflops, only_user.tbps) == (100.0, 1.0)


def test_unknown_gpu_is_said_and_derivation_labelled() -> None:
    unknown = resolve_peak("NVIDIA GH200 480GB")
    assert not unknown.known
    assert unknown.tflops_source == "unknown"
    assert unknown.notes == (
        "GPU 'NVIDIA GH200 480GB' is not in the peak table (docs/gpu-peaks.md): give --peak-tflops and --peak-tbps",
    )
    derived = resolve_peak(
        "NVIDIA GH200 480GB", sm_count=132, clock_hz=1.98e9, compute_capability=(9, 0), memory_bandwidth=3.35232e12
    )
    assert derived.tflops == round(132 * 1.98e9 * 4096 / 1e12, 1) == 1070.5  # rounded to 0.1 TFLOP/s
    assert derived.tflops_source.startswith("derived: 132 SMs x 1.98 GHz x 4096 FLOP/clk/SM")
    assert derived.tbps == pytest.approx(3.35232)
    assert derived.tbps_source == "derived: the trace's memoryBandwidth"


def test_bad_override() -> None:
    with pytest.raises(BadInput, match=r"--peak-tflops = -1.0 is not a positive number"):
        resolve_peak("NVIDIA H100 80GB HBM3", tflops=-1.0)


def test_fixture_gpu_name_matches(h100_sqlite: object) -> None:
    import sqlite3

    con = sqlite3.connect(str(h100_sqlite))
    try:
        (name,) = con.execute("SELECT name FROM TARGET_INFO_GPU LIMIT 1").fetchone()
    finally:
        con.close()
    assert resolve_peak(name).entry == "H100 SXM5 80GB"


def test_docs_table_equals_the_code_table() -> None:
    """docs/gpu-peaks.md shows exactly GPU_TABLE (name, TFLOP/s, TB/s, SMs), in order."""
    from pathlib import Path

    from dsocr.analytic.peaks import GPU_TABLE

    text = (Path(__file__).resolve().parents[1] / "docs" / "gpu-peaks.md").read_text()
    block = text.split("<!-- peak-table:begin -->")[1].split("<!-- peak-table:end -->")[0]
    rows = [line.strip("|").split("|") for line in block.strip().splitlines()[2:]]
    got = [(c[0].strip(), float(c[1]), float(c[2]), int(c[3])) for c in rows]
    assert got == [(g.name, g.tflops, g.tbps, g.sms) for g in GPU_TABLE]
