"""Operator memory (``dsocr capture --op-memory``): the document, the worker's pass on the CPU, the analyzer's join.

The analyzer tests copy the bundled sample run directory and put a hand-built op_memory.json beside it;
the worker test runs the shrunk replica in-process (tiny mode, 1 page, 3 tokens) with the pass on.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from dsocr.analyze.input_files import sample_trace
from dsocr.analyze.op_memory import HOW_TO, JOINED, join_operators, read_run, tables
from dsocr.cli import main
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput
from dsocr.contract.op_memory import MEASURES, OperatorMemory, OpMemory, StageMemory

MiB = 2**20


def _doc() -> OpMemory:
    """A document naming operators the bundled sample has (aten::addmm in clip, aten::mm in prefill)."""
    clip = StageMemory(
        stage="clip",
        instances=2,
        allocated_bytes=9 * MiB,
        freed_bytes=MiB,
        allocations=30,
        peak_bytes=7000 * MiB,
        peak_increase_bytes=40 * MiB,
        operators=(
            OperatorMemory("aten::addmm", calls=24, allocations=24, allocated_bytes=6 * MiB, freed_bytes=0),
            OperatorMemory("aten::gelu", calls=6, allocations=6, allocated_bytes=3 * MiB, freed_bytes=MiB),
        ),
        operators_total=12,
    )
    prefill = StageMemory(
        stage="prefill",
        instances=2,
        allocated_bytes=5 * MiB,
        freed_bytes=0,
        allocations=10,
        peak_bytes=7100 * MiB,
        peak_increase_bytes=50 * MiB,
        operators=(OperatorMemory("aten::mm", calls=10, allocations=10, allocated_bytes=5 * MiB, freed_bytes=0),),
        operators_total=1,
    )
    return OpMemory(device="cuda:0", measures=MEASURES, stages=(clip, prefill), top_n=20, torch="2.x")


def test_document_round_trip_and_refusals(tmp_path: Path) -> None:
    doc = _doc()
    path = tmp_path / rundir.OP_MEMORY
    doc.write(path)
    assert OpMemory.read(path) == doc
    data = doc.to_json()
    for bad, says in (
        ({**data, "schema": "other"}, "not a dsocr.op_memory document"),
        ({**data, "schema_version": "2.0"}, "schema_version '2.0'"),
        ({**data, "stages": [{"stage": "clip"}]}, "malformed"),
        ({**data, "stages": [{**data["stages"][0], "allocations": "many"}]}, "non-integer"),
    ):
        with pytest.raises(BadInput, match=says):
            OpMemory.from_json(bad, source="x/op_memory.json")
    path.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        OpMemory.read(path)


def test_read_run_absent_corrupt_and_join(tmp_path: Path) -> None:
    import polars as pl

    assert read_run(tmp_path) == (None, None)
    (tmp_path / rundir.OP_MEMORY).write_text('{"schema": "dsocr.op_memory", "schema_version": "1.0"}')
    mem, warning = read_run(tmp_path)
    assert mem is None and warning is not None
    assert str(tmp_path / rundir.OP_MEMORY) in warning and "left out of the reports" in warning
    mem = tables(_doc())
    ops = pl.DataFrame(
        {
            "stage": ["clip", "clip", "prefill", "sam"],
            "operator": ["aten::addmm", "aten::cat", "aten::mm", "aten::addmm"],
            "gpu_ns": [3, 2, 1, 1],
        }
    )
    joined = join_operators(ops, mem)
    assert joined.columns == [*ops.columns, *JOINED]
    assert joined.rows() == [
        ("clip", "aten::addmm", 3, 6 * MiB, 24, 7000 * MiB),
        ("clip", "aten::cat", 2, None, None, 7000 * MiB),  # not among clip's top operators
        ("prefill", "aten::mm", 1, 5 * MiB, 10, 7100 * MiB),
        ("sam", "aten::addmm", 1, None, None, None),  # no sam stage in the document
    ]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample run directory with a hand-built op_memory.json, analyzed."""
    base = tmp_path_factory.mktemp("opmem")
    run = base / "run"
    shutil.copytree(sample_trace(), run)
    _doc().write(run / rundir.OP_MEMORY)
    out = base / "out"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--out", str(out), "--quiet"])
    assert exc.value.code == 0
    return out


def test_analysis_json_and_sqlite_carry_op_memory(analyzed: Path) -> None:
    doc = json.loads((analyzed / rundir.ANALYSIS_JSON).read_text())
    mem = doc["op_memory"]
    assert (mem["device"], mem["measures"], mem["top_n"]) == ("cuda:0", MEASURES, 20)
    assert [(s["stage"], s["peak_bytes"]) for s in mem["stages"]] == [("clip", 7000 * MiB), ("prefill", 7100 * MiB)]
    assert [(o["stage"], o["rank"], o["operator"]) for o in mem["operators"]] == [
        ("clip", 1, "aten::addmm"),
        ("clip", 2, "aten::gelu"),
        ("prefill", 1, "aten::mm"),
    ]
    addmm = [o for o in doc["operators"] if o["stage"] == "clip" and o["operator"] == "aten::addmm"]
    assert addmm and all(o["mem_allocated_bytes"] == 6 * MiB and o["mem_allocations"] == 24 for o in addmm)
    assert all(o["stage_peak_bytes"] == 7000 * MiB for o in addmm)
    sam = [o for o in doc["operators"] if o["stage"] == "sam"]
    assert sam and all(o["mem_allocated_bytes"] is None and o["stage_peak_bytes"] is None for o in sam)
    con = sqlite3.connect(analyzed / rundir.RESULTS_SQLITE)
    try:
        assert con.execute("SELECT stage, peak_bytes FROM op_memory_stages ORDER BY stage").fetchall() == [
            ("clip", 7000 * MiB),
            ("prefill", 7100 * MiB),
        ]
        assert con.execute("SELECT count(*) FROM op_memory_operators").fetchone() == (3,)
        got = con.execute(
            "SELECT DISTINCT mem_allocated_bytes FROM operators WHERE stage = 'prefill' AND operator = 'aten::mm'"
        ).fetchall()
        assert got == [(5 * MiB,)]
    finally:
        con.close()


def test_reports_show_op_memory(analyzed: Path) -> None:
    md = (analyzed / rundir.REPORT_MD).read_text()
    assert "## Operator memory (allocator)" in md and f"What is measured: {MEASURES}" in md
    assert "| clip | 2 | 9.0 MiB | 30 | 1.0 MiB | 7,000.0 MiB | 40.0 MiB |" in md
    assert "### Top operators by allocated bytes: prefill" in md
    assert "| 1 | aten::mm | 10 | 10 | 5.0 MiB | 0.0 MiB |" in md
    assert "| alloc | allocs |" in md  # the joined columns of the top-operators tables
    assert HOW_TO not in md
    html = (analyzed / rundir.REPORT_HTML).read_text()
    assert "<h3>Operator memory (allocator)</h3>" in html and '<th class="num">allocated (allocator)</th>' in html
    assert "Top operators by allocated bytes: clip" in html


def test_without_op_memory_the_reports_say_how(tmp_path: Path) -> None:
    """A run directory without op_memory.json says how to get it; analysis.json has no op_memory key."""
    run = tmp_path / "run"
    shutil.copytree(sample_trace(), run)
    (run / rundir.OP_MEMORY).unlink()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--out", str(out), "--quiet"])
    assert exc.value.code == 0
    assert f"- **operator memory**: {HOW_TO}" in (out / rundir.REPORT_MD).read_text()
    assert "Operator memory not captured" in (out / rundir.REPORT_HTML).read_text()
    assert "op_memory" not in json.loads((out / rundir.ANALYSIS_JSON).read_text())


def test_the_bundled_sample_carries_its_measured_op_memory() -> None:
    """The sample was captured with --op-memory on the H100: the golden report shows the allocator's view."""
    golden = Path(__file__).parent / "golden" / "sample"
    md = (golden / "report.md").read_text()
    assert "## Operator memory (allocator)" in md and "### Per stage (cuda, one pass)" in md
    assert HOW_TO not in md
    assert json.loads((golden / "analysis.json").read_text())["op_memory"]["device"].startswith("cuda")


class _FakeCuda:
    """The allocator counters StageMarks reads: ``memory_allocated``, ``max_memory_allocated``, their reset."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def alloc(self, n: int) -> None:
        self.now += n
        self.peak = max(self.peak, self.now)

    def memory_allocated(self) -> int:
        return self.now

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.now


def test_cuda_stage_peaks_fold_into_enclosing_stages() -> None:
    """Nested stages each get their own peak (the counter is reset per stage and folded outwards)."""
    import contextlib
    from types import SimpleNamespace

    from dsocr.capture.op_memory import StageMarks, summarize

    cuda = _FakeCuda()
    torch = SimpleNamespace(cuda=cuda, profiler=SimpleNamespace(record_function=lambda _n: contextlib.nullcontext()))
    marks = StageMarks(torch, cuda=True)
    cuda.alloc(100)  # weights
    with marks("page"):
        with marks("sam"):
            cuda.alloc(200)  # 300
            cuda.alloc(-150)  # 150
        cuda.alloc(250)  # 400: after sam closed, page only
        cuda.alloc(-300)
        with marks("sam"):
            cuda.alloc(50)  # 150: below the first instance's peak
    doc = summarize([], marks, "cuda", None, top_n=5)
    got = {s.stage: (s.instances, s.peak_bytes, s.peak_increase_bytes) for s in doc.stages}
    assert got == {"sam": (2, 300, 200), "page": (1, 400, 300)}


def test_op_memory_runs_in_the_last_baseline_or_the_profiled_worker(tmp_path: Path) -> None:
    from dsocr.capture.driver import CaptureSettings, baseline_plan, op_memory_run
    from dsocr.capture.inputs import collect

    assert op_memory_run(baseline_plan(0)) == rundir.TIMING
    assert op_memory_run(baseline_plan(1)) == rundir.TIMING_BASELINE
    assert op_memory_run(baseline_plan(2)) == rundir.TIMING_BASELINE  # k=2 runs after the profiled pass
    assert op_memory_run(baseline_plan(3)) == "timing-baseline-3.json"  # the last of three, after it
    pages = collect([sorted((Path(__file__).parents[1] / "src/dsocr/data/pages").glob("*.png"))[0]])
    settings = CaptureSettings(device="cpu", op_memory=True)
    cfg = settings.worker_config(pages, tmp_path / "t.json", False, tmp_path / rundir.OP_MEMORY)
    assert cfg.op_memory_out == str(tmp_path / rundir.OP_MEMORY)
    assert settings.worker_config(pages, tmp_path / "t.json", True).op_memory_out is None


def test_op_memory_of_a_data_parallel_run_is_made_by_worker_0(tmp_path: Path) -> None:
    from dsocr.capture import shards
    from dsocr.capture.driver import CaptureSettings, _write_configs
    from dsocr.capture.inputs import collect
    from dsocr.capture.worker_config import WorkerConfig

    pages = collect(sorted((Path(__file__).parents[1] / "src/dsocr/data/pages").glob("*.png"))[:2])
    settings = CaptureSettings(device="cpu", devices=("cpu", "cpu"), op_memory=True)
    out = tmp_path / rundir.OP_MEMORY
    _write_configs(settings, pages, tmp_path, "worker-config.json", rundir.TIMING, profiled=True, op_memory_out=out)
    made = [WorkerConfig.read(tmp_path / shards.per_worker("worker-config.json", k)).op_memory_out for k in (0, 1)]
    assert made == [str(out), None]
