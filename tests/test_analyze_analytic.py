"""dsocr analyze + the analytic model: workload from a run directory or flags, MFU/MBU per stage,
module attribution, GPU idle gaps (hand-built traces with known times)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dsocr.analytic.workload import Workload, estimate
from dsocr.analyze.analytic_section import PeakFlags
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.workload_from_run import WorkloadFlags, compact_timing
from dsocr.cli import main
from dsocr.contract.errors import BadUsage
from dsocr.contract.run_timing import RunTiming
from tracebuild import TraceBuilder

H100_TFLOPS = 989.4  # the peak table's H100 SXM5 80GB row (docs/gpu-peaks.md)
H100_TBPS = 3.35

#: (stage, parent) of the dsocr stages each page has, with the kernel time (ns) per repeat
STAGE_KERNELS = {
    "sam": (400, 600),
    "clip": (100, 100),
    "projector": (10, 30),
    "prefill": (1000, 3000),
    "decode_step": (50, 70),
}


class _Clock:
    def __init__(self) -> None:
        self.t = 1_000

    def take(self, n: int) -> int:
        start = self.t
        self.t += n
        return start


def build_dsocr_trace(path: Path) -> dict[str, Any]:
    """A dsocr-domain trace: 2 repeats x 1 page (vision > sam, clip, projector; prefill; decode > 3 steps).

    Every stage launches one kernel per instance (decode: one per step), whose duration is
    ``STAGE_KERNELS[stage][repeat]``; kernels run right after their launch, never overlapping.
    Returns the expected per-repeat kernel and range times.
    """
    b = TraceBuilder()
    b.gpu()
    t = b.thread()
    dom = b.domain("dsocr", t)
    clk = _Clock()
    expect: dict[str, Any] = {"busy": {}, "wall": {}}

    def launch(stage: str, rep: int, name: str) -> None:
        start = clk.take(20)
        corr = b.api(t, start, start + 10, "cudaLaunchKernel_v7000")
        dur = STAGE_KERNELS[stage][rep]
        k0 = clk.take(dur + 5)
        b.kernel(corr, k0, k0 + dur, name)

    def stage(name: str, rep: int, body: Any) -> None:
        s = clk.take(10)
        body()
        e = clk.take(10)
        b.range(t, s, e, name, domain=dom)
        key = (name, rep)
        expect["wall"][key] = expect["wall"].get(key, 0) + (e - s)

    for rep in (0, 1):
        rs = clk.take(10)

        def page(rep: int = rep) -> None:
            def vision() -> None:
                stage("sam", rep, lambda: launch("sam", rep, "sam_gemm"))
                stage("clip", rep, lambda: launch("clip", rep, "clip_gemm"))
                stage("projector", rep, lambda: launch("projector", rep, "proj_gemm"))

            stage("vision", rep, vision)
            stage("prefill", rep, lambda: launch("prefill", rep, "prefill_gemm"))

            def decode() -> None:
                for step in range(3):
                    s = clk.take(10)
                    launch("decode_step", rep, "decode_gemm")
                    e = clk.take(10)
                    b.range(t, s, e, "decode_step", domain=dom, payload=step)

            stage("decode", rep, decode)

        ps = clk.take(10)
        page()
        pe = clk.take(10)
        b.range(t, ps, pe, "page", domain=dom, payload=0)
        re_ = clk.take(10)
        b.range(t, rs, re_, "repeat", domain=dom, payload=rep)
    for rep in (0, 1):
        k = STAGE_KERNELS
        expect["busy"][("sam", rep)] = k["sam"][rep]
        expect["busy"][("clip", rep)] = k["clip"][rep]
        expect["busy"][("projector", rep)] = k["projector"][rep]
        expect["busy"][("vision", rep)] = k["sam"][rep] + k["clip"][rep] + k["projector"][rep]
        expect["busy"][("prefill", rep)] = k["prefill"][rep]
        expect["busy"][("decode", rep)] = 3 * k["decode_step"][rep]
    b.write(path)
    return expect


PAGE = {"index": 0, "name": "p.png", "path": "p.png", "width": 1240, "height": 1754, "grid": [2, 3], "crops": 6}


def make_run_dir(root: Path) -> tuple[Path, dict[str, Any]]:
    run = root / "run"
    run.mkdir()
    expect = build_dsocr_trace(run / "trace.sqlite")
    timing = {
        "schema": "dsocr.timing/1",
        "profiled": True,
        "config": {"mode": "gundam", "max_new_tokens": 4, "prompt_tokens": 12, "dtype": "auto"},
        "environment": {"dtype": "bfloat16"},
        "prompt": {"tokens": 12},
        "pages": [PAGE],
        "records": [
            {"repeat": r, "page": 0, "stage": s, "ms": ms, "tokens": None}
            for r in (0, 1)
            for s, ms in (("vision", 1.0), ("prefill", 2.0), ("decode", 3.0))
        ],
    }
    baseline = {**timing, "profiled": False}
    (run / "timing.json").write_text(json.dumps(timing))
    (run / "timing-baseline.json").write_text(json.dumps(baseline))
    (run / "manifest.json").write_text(json.dumps({"settings": {"mode": "gundam", "max_new_tokens": 4}}))
    return run, expect


def _mean(expect: dict[str, Any], kind: str, stage: str) -> float:
    return (expect[kind][(stage, 0)] + expect[kind][(stage, 1)]) / 2


def test_analytic_section_of_a_run_directory(tmp_path: Path) -> None:
    run, expect = make_run_dir(tmp_path)
    doc = run_analysis([run]).to_dict()
    an = doc["analytic"]
    assert an["available"] and an["workload_source"] == "run" and an["pages_per_pass"] == 1
    assert an["peak"]["tflops"] == H100_TFLOPS and an["peak"]["source"] == "table: H100 SXM5 80GB"
    assert an["workload"]["crop_grid"] == [2, 3] and an["workload"]["new_tokens"] == 4
    assert an["workload"]["dtype"] == "bfloat16"
    # the model independently: the page's workload as the capture ran it
    est = estimate(Workload(mode="gundam", crop_grid=(2, 3), prompt_tokens=12, new_tokens=4, dtype="bf16"))
    rows = {r["stage"]: r for r in an["stage_metrics"]}
    assert list(rows) == ["vision", "sam", "clip", "projector", "prefill", "decode", "model"]
    for name in ("vision", "sam", "clip", "projector", "prefill", "decode"):
        r = rows[name]
        flops = est.vision_part(name).flops if name in ("sam", "clip", "projector") else est.stage(name).cost.flops
        nbytes = est.vision_part(name).bytes if name in ("sam", "clip", "projector") else est.stage(name).cost.bytes
        busy, wall = _mean(expect, "busy", name), _mean(expect, "wall", name)
        assert (r["flops"], r["bytes"], r["gpu_busy_ns"], r["wall_ns"]) == (flops, nbytes, busy, wall)
        assert r["mfu_busy"] == pytest.approx(flops / (H100_TFLOPS * 1e12 * busy * 1e-9), rel=1e-12)
        assert r["mfu_wall"] == pytest.approx(flops / (H100_TFLOPS * 1e12 * wall * 1e-9), rel=1e-12)
        assert r["mbu_busy"] == pytest.approx(nbytes / (H100_TBPS * 1e12 * busy * 1e-9), rel=1e-12)
        predicted = max(flops / (H100_TFLOPS * 1e3), nbytes / (H100_TBPS * 1e3))  # ns
        assert r["predicted_ns"] == pytest.approx(predicted, rel=1e-12)
        assert r["ratio_busy"] == pytest.approx(busy / predicted, rel=1e-12)
        assert r["passes"] == 2
    model = rows["model"]
    total = sum(est.stage(s).cost.flops for s in ("vision", "prefill", "decode"))
    busy = sum(_mean(expect, "busy", s) for s in ("vision", "prefill", "decode"))
    assert model["flops"] == total
    assert an["model_mfu"]["mfu_busy"] == pytest.approx(total / (H100_TFLOPS * 1e3 * busy), rel=1e-12)
    # the run's files travel with the analysis (report overhead table, tokens)
    assert doc["manifest"]["settings"]["mode"] == "gundam" and doc["baseline"]["profiled"] is False


def test_peak_flags_override_the_table(tmp_path: Path) -> None:
    run, expect = make_run_dir(tmp_path)
    doc = run_analysis([run], peak=PeakFlags(tflops=500.0, tbps=2.0)).to_dict()
    an = doc["analytic"]
    assert (an["peak"]["tflops_source"], an["peak"]["tbps_source"]) == ("user (--peak-tflops)", "user (--peak-tbps)")
    prefill = next(r for r in an["stage_metrics"] if r["stage"] == "prefill")
    assert prefill["mfu_busy"] == pytest.approx(prefill["flops"] / (500e3 * _mean(expect, "busy", "prefill")))


def test_unknown_gpu_is_a_warning(tmp_path: Path) -> None:
    run, _ = make_run_dir(tmp_path)
    doc = run_analysis([run], peak=PeakFlags(gpu="Potato 9000")).to_dict()
    assert doc["warnings"] == [
        "GPU peak: GPU 'Potato 9000' is not in the peak table (docs/gpu-peaks.md): give --peak-tflops and --peak-tbps"
    ]
    assert run_analysis([run]).to_dict()["warnings"] == []  # the trace's own H100 is in the table


def test_foreign_trace_needs_flags(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    build_dsocr_trace(path)  # the same trace, but no timing.json beside it
    an = run_analysis([path]).to_dict()["analytic"]
    assert an["available"] is False and "--prefill-tokens" in an["reason"] and an["peak"]["tflops"] == H100_TFLOPS
    an = run_analysis([path], workload=WorkloadFlags(mode="gundam", crops="2x3", max_new_tokens=4)).to_dict()[
        "analytic"
    ]
    assert an["workload_source"] == "flags" and an["pages_per_pass"] == 1
    est = estimate(Workload(mode="gundam", crop_grid=(2, 3), prompt_tokens=12, new_tokens=4))
    assert next(r for r in an["stage_metrics"] if r["stage"] == "decode")["flops"] == est.stage("decode").cost.flops


def test_decoder_only_prefill_tokens(h100_sqlite: Path) -> None:
    an = run_analysis([h100_sqlite], workload=WorkloadFlags(prefill_tokens=900, max_new_tokens=65)).to_dict()[
        "analytic"
    ]
    rows = {r["stage"]: r for r in an["stage_metrics"]}
    assert an["workload"]["prefill_length"] == 900 and an["workload"]["image_embeddings"] == 0
    assert rows["vision"]["flops"] == 0
    # the fixture's one pass (file) holds three prefill ranges (warm-up, timed, emit_nvtx run): three "pages"
    assert an["pages_per_pass"] == 3 and rows["prefill"]["per_page"]["flops"] * 3 == rows["prefill"]["flops"]
    # prefill of 900 positions through the decoder: 2 x ~0.42B active parameters per token, plus attention
    assert 2 * 0.40e9 * 900 < rows["prefill"]["per_page"]["flops"] < 2 * 0.45e9 * 900
    assert rows["prefill"]["mfu_busy"] is not None and 0 < rows["prefill"]["mfu_busy"] < 1


def test_bad_workload_flags_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(BadUsage, match="--prefill-tokens describes a decoder-only trace"):
        run_analysis_flags(tmp_path, WorkloadFlags(prefill_tokens=10, mode="gundam"))
    path = tmp_path / "t.sqlite"
    build_dsocr_trace(path)
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(path), "--out", str(tmp_path / "o"), "--peak-tflops", "-3", "-q"])
    err = " ".join(capsys.readouterr().err.replace("\u2502", " ").split())
    assert exc.value.code == 2  # a bad option value: usage error naming the option
    assert "Invalid value for '--peak-tflops' (env var: 'DSOCR_PEAK_TFLOPS'): -3 is not a positive number" in err


def run_analysis_flags(tmp_path: Path, flags: WorkloadFlags) -> None:
    path = tmp_path / "f.sqlite"
    build_dsocr_trace(path)
    run_analysis([path], workload=flags)


def test_cli_writes_html_with_mfu_and_sqlite_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, _ = make_run_dir(tmp_path)
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--out", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert names == {"analysis.json", "report.md", "results.sqlite", "report.html", "summary.md", "plots"}
    html = (out / "report.html").read_text()
    assert "Model-level MFU is not available" not in html and "No analytic model" not in html
    assert "No unprofiled baseline" not in html
    md = (out / "report.md").read_text()
    assert md.index("## Summary") < md.index("## Plots") < md.index("## Stages")
    assert "![Roofline](plots/roofline.svg)" in md and (out / "plots" / "roofline.svg").is_file()
    assert "## Analytic model: MFU and MBU per stage" in md and "| prefill |" in md
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("select count(*) from stage_metrics").fetchone() == (7,)
    assert con.execute("select count(*) from idle_gaps where stage = 'decode'").fetchone()[0] > 0


def test_compact_timing_keeps_per_repeat_sums() -> None:
    recs = [
        {
            "repeat": r,
            "page": p,
            "stage": "decode_step",
            "index": i,
            "ms": 1.0 + i,
            "tokens": 1,
            "context_length": 9 + i,
        }
        for r in (0, 1)
        for p in (0, 1)
        for i in range(3)
    ]
    recs.append({"repeat": 0, "page": 0, "stage": "prefill", "ms": 5.0, "tokens": 1})
    out_doc = compact_timing(RunTiming.from_json({"profiled": True, "records": recs}))
    assert out_doc is not None
    out = out_doc.to_json()
    assert (
        list(out) == ["profiled", "records", "records_compacted"]
        and out["records_compacted"]
        and out["profiled"] is True
    )
    steps = [r for r in out["records"] if r["stage"] == "decode_step"]
    assert [r["context_length"] for r in steps[:3]] == [9, 10, 11]  # first (repeat, page) in full
    assert [(r["repeat"], r["page"], r["ms"], r["steps"]) for r in steps[3:]] == [
        (0, 1, 6.0, 3),
        (1, 0, 6.0, 3),
        (1, 1, 6.0, 3),
    ]
    assert sum(r["ms"] for r in out["records"]) == sum(r["ms"] for r in recs)


def test_a_replica_run_with_its_execution_is_modelled_as_it_ran() -> None:
    """From issue 10 on the replica records its execution: lm_head over every prefill position, SDPA in vision."""
    from dsocr.analyze.workload_from_run import from_timing

    timing = {
        "config": {"mode": "tiny", "max_new_tokens": 4, "prompt_tokens": 12, "attn_implementation": "eager"},
        "pages": [{"name": "p", "width": 800, "height": 1000}],
    }
    before = from_timing(RunTiming.from_json(timing)).pages[0]
    assert (before.attn_impl, before.vision_attn_impl, before.prefill_logits) == ("eager", None, "last")
    executed = {**timing, "model": {"execution": {"moe": "loop", "attn": "eager", "prefill_logits": "all"}}}
    w = from_timing(RunTiming.from_json(executed)).pages[0]
    assert (w.attn_impl, w.vision_attn_impl, w.prefill_logits) == ("eager", "sdpa", "all")
    from dsocr.analytic.export import assumptions
    from dsocr.analytic.workload import estimate

    said = assumptions(estimate(w))
    assert "decoder attention eager: every pair computed; SAM and CLIP attention sdpa" in " ".join(said)
    assert "prefill logits on every position" in said
