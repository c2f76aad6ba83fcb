"""The SVG plots: well-formed, accessible, and the marks carry the data's values."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from dsocr.report import plots
from dsocr.report.plots.svg import Linear, Log, nice_max, nice_ticks, si
from dsocr.report.view import DecodeStep, RooflinePoint, Stat, TimelineBin

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    title = root.find("s:title", NS)
    desc = root.find("s:desc", NS)
    assert title is not None and title.text
    assert desc is not None and desc.text
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def tips(root: ET.Element, tag: str, cls: str) -> list[str]:
    out = []
    for el in root.iter(f"{{http://www.w3.org/2000/svg}}{tag}"):
        if cls in (el.get("class") or "").split():
            t = el.find("s:title", NS)
            out.append(t.text if t is not None and t.text else "")
    return out


def test_stage_breakdown_bars_and_labels() -> None:
    rows = [("prefill", 60e6, 80e6), ("decode", 159e6, 4596e6)]
    root = parse(plots.stage_breakdown(rows))
    labels = texts(root)
    assert "prefill" in labels and "decode" in labels
    assert "4,596 ms, 96.5% idle" in labels
    assert "80 ms, 25.0% idle" in labels
    assert "mean range time per pass (ms)" in labels
    busy = tips(root, "rect", "busy")
    idle = tips(root, "rect", "idle")
    assert busy == ["prefill: GPU busy 60 ms", "decode: GPU busy 159 ms"]
    assert idle == ["prefill: GPU idle 20 ms", "decode: GPU idle 4,437 ms"]
    # widths proportional to the times (same x scale for both bars)
    rects = {
        el.find("s:title", NS).text: float(el.get("width"))  # type: ignore[union-attr, arg-type]
        for el in root.iter("{http://www.w3.org/2000/svg}rect")
        if el.get("class") in ("busy", "idle")
    }
    assert rects["decode: GPU idle 4,437 ms"] / rects["decode: GPU busy 159 ms"] == pytest.approx(4437 / 159, rel=0.01)


def test_stage_breakdown_without_gpu() -> None:
    root = parse(plots.stage_breakdown([("decode", None, 20e6)]))
    assert tips(root, "rect", "range") == ["decode: 20 ms (GPU not traced)"]
    assert "20 ms, GPU not traced" in texts(root) and "GPU not traced" in texts(root)


def test_category_breakdown_shares_sum_to_100() -> None:
    rows = [("decode", [("gemm", 60.0), ("moe_routing", 30.0), ("elementwise", 10.0)]), ("prefill", [("gemm", 1.0)])]
    root = parse(plots.category_breakdown(rows))
    segs = tips(root, "rect", "seg")
    assert any(s.startswith("decode: gemm 60.0%") for s in segs)
    assert any(s.startswith("decode: moe_routing 30.0%") for s in segs)
    assert any(s.startswith("prefill: gemm 100.0%") for s in segs)
    widths = [
        float(el.get("width") or 0)
        for el in root.iter("{http://www.w3.org/2000/svg}rect")
        if el.get("class") == "seg" and (el.find("s:title", NS).text or "").startswith("decode")  # type: ignore[union-attr]
    ]
    full = 720 - 110 - 30
    assert sum(widths) == pytest.approx(full, abs=0.1)
    assert "gemm" in texts(root) and "moe_routing" in texts(root)  # legend


def test_decode_latency_points_and_context_axis() -> None:
    steps = [DecodeStep(i, 70e6 + i * 1e6, 2.5e6, 900 + i) for i in range(8)]
    root = parse(plots.decode_latency(steps))
    pts = tips(root, "circle", "step")
    assert len(pts) == 8
    assert pts[0] == "step 0: 70 ms" and pts[7] == "step 7: 77 ms"
    labels = texts(root)
    assert "context length (tokens)" in labels and "step time (ms)" in labels and "decode step" in labels
    lines = [el for el in root.iter("{http://www.w3.org/2000/svg}polyline")]
    assert {el.get("class") for el in lines} == {"latency", "busy", "context"}
    # the latency line rises left to right (y pixels decrease)
    ys = [float(p.split(",")[1]) for p in lines[0].get("points", "").split()]
    assert ys == sorted(ys, reverse=True)


def test_timeline_bins_heights_follow_busy_fraction() -> None:
    bins = [
        TimelineBin(i * 1e6, (i + 1) * 1e6, f, "decode" if i > 1 else "prefill") for i, f in enumerate([1, 0.5, 0.1, 0])
    ]
    root = parse(plots.gpu_timeline(bins))
    heights = [
        float(el.get("height") or 0) for el in root.iter("{http://www.w3.org/2000/svg}rect") if el.get("class") == "bin"
    ]
    assert heights[0] == pytest.approx(110) and heights[1] == pytest.approx(55) and heights[3] == 0
    assert "prefill" in texts(root) and "decode" in texts(root)
    assert tips(root, "rect", "bin")[1] == "1.0-2.0 ms: 50.0% busy (prefill)"


def test_roofline_points_below_roof_and_labelled() -> None:
    peak, bw = 989.4e12, 3.35e12
    pts = [RooflinePoint("prefill", "stage", 300.0, 400e12), RooflinePoint("decode", "stage", 2.0, 1e12)]
    svg = plots.roofline(pts, peak, bw)
    root = parse(svg)
    circles = tips(root, "circle", "point")
    assert circles[0].startswith("prefill (stage): 300 FLOP/byte, 400 TFLOP/s, 40.4% of its roof")
    # decode's roof is bandwidth: 2 FLOP/B x 3.35 TB/s = 6.7 TFLOP/s -> 1e12 / 6.7e12 = 14.9%
    assert circles[1].endswith("14.9% of its roof")
    assert "peak 989 TFLOP/s" in texts(root)
    desc = root.find("s:desc", NS)
    assert desc is not None and "ridge at 295 FLOP/byte" in (desc.text or "")
    # the point's pixel sits at the log-scaled position: higher FLOP/s -> smaller y
    cy = [float(el.get("cy") or 0) for el in root.iter("{http://www.w3.org/2000/svg}circle")]
    assert cy[0] < cy[1]


def test_pass_spread_dots_per_pass() -> None:
    rows = [("decode", Stat.of([4.5e9, 4.6e9, 4.7e9])), ("prefill", Stat.of([80e6, 80e6, 81e6]))]
    root = parse(plots.pass_spread(rows))
    dots = tips(root, "circle", "pass")
    assert len(dots) == 6
    assert dots[0] == "decode pass 0: 4,500 ms"
    assert "mean 4,600 ms, CV 2.2%" in texts(root)


def test_plots_without_data_say_why() -> None:
    for svg, words in [
        (plots.stage_breakdown([]), "No stage ranges"),
        (plots.category_breakdown([]), "No GPU kernels"),
        (plots.decode_latency([]), "No decode_step"),
        (plots.gpu_timeline([]), "No GPU activity"),
        (plots.roofline([], 1.0, 1.0), "roofline needs both"),
        (plots.pass_spread([("decode", Stat.of([1.0]))]), "Single pass"),
    ]:
        root = parse(svg)
        assert any(words in t for t in texts(root)), svg


def test_labels_are_escaped() -> None:
    root = parse(plots.stage_breakdown([("a<b>&c", 1e6, 2e6)]))
    assert "a<b>&c" in texts(root)


def test_deterministic() -> None:
    rows = [("prefill", 60e6, 80e6)]
    assert plots.stage_breakdown(rows) == plots.stage_breakdown(rows)


def test_scales_and_ticks() -> None:
    assert nice_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 4596, 5)[:3] == [0, 1000, 2000]
    assert nice_max(4596) == 5000 and nice_max(0.9) == 1.0 and nice_max(0) == 1.0
    assert Linear(0, 10, 100, 200)(5) == 150
    assert Log(1, 100, 0, 100)(10) == pytest.approx(50)
    assert Log(0.1, 1000, 0, 1).ticks() == [0.1, 1, 10, 100, 1000]
    assert si(989.4e12, "FLOP/s") == "989 TFLOP/s" and si(0.0025, "s") == "2.5 ms"
    assert re.fullmatch(r"[\d.]+ µs", si(3e-6, "s"))


def test_category_labels_shown_colours_kept() -> None:
    rows = [("decode", [("moe_routing", 1.0), ("gemm", 3.0)])]
    root = parse(plots.category_breakdown(rows, labels={"moe_routing": "MoE routing/sort/scan/index"}))
    assert "MoE routing/sort/scan/index" in texts(root) and "moe_routing" not in texts(root)
    assert tips(root, "rect", "seg")[1].startswith("decode: MoE routing/sort/scan/index 25.0%")
    fills = {el.get("fill") for el in root.iter("{http://www.w3.org/2000/svg}rect") if el.get("class") == "seg"}
    assert fills == {"#4e79a7", "#e15759"}  # gemm blue, MoE routing red, as in every report


def test_pass_spread_whiskers_stay_inside_the_axis() -> None:
    """Two passes: the +/- stddev whisker reaches past both dots; it must not run over the stage labels."""
    from dsocr.report.plots.charts import LEFT, RIGHT, W

    rows = [("vision", Stat.of([100e6, 100.2e6])), ("projector", Stat.of([2.0e6, 2.6e6]))]
    root = parse(plots.pass_spread(rows))
    xs = [float(line.get(a) or 0) for line in root.iter("{http://www.w3.org/2000/svg}line") for a in ("x1", "x2")]
    assert xs and min(xs) >= LEFT and max(xs) <= W - RIGHT
