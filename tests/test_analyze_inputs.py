"""Several inputs of one ``dsocr analyze``: unrelated traces and duplicates are refused; partial runs warned."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import CPU_DIR
from dsocr.analyze.analysis import TraceInfo
from dsocr.analyze.input_files import resolve_input
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.study import check_same_study, distinct_inputs
from dsocr.contract.errors import BadInput


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dsocr-cache"))


def _other_capture(src: Path, dst: Path) -> Path:
    """Another capture like ``src``: the same GPU and stages, its ranges 1 us later (different content)."""
    shutil.copyfile(src, dst)
    con = sqlite3.connect(dst)
    con.execute('UPDATE NVTX_EVENTS SET start = start + 1000, "end" = "end" + 1000')
    con.commit()
    con.close()
    return dst


def test_gpu_differs_is_refused(h100_sqlite: Path, cpu_sqlite: Path) -> None:
    steps: list[str] = []
    with pytest.raises(BadInput) as exc:
        run_analysis([h100_sqlite, cpu_sqlite], progress=steps.append)
    msg = exc.value.message
    assert str(h100_sqlite) in msg and str(cpu_sqlite) in msg
    assert "different GPUs (NVIDIA H100 80GB HBM3 vs no GPU)" in msg
    assert "\n" not in msg
    # refused right after loading the second trace, before its attribution
    assert steps.count("attributing GPU work to NVTX ranges") == 1 and steps[-1] == "loading cpu.sqlite"


def test_same_file_twice_is_refused(cpu_sqlite: Path) -> None:
    with pytest.raises(BadInput, match=r"the same file, not two passes; give each trace once") as exc:
        run_analysis([cpu_sqlite, cpu_sqlite])
    assert exc.value.message.count(str(cpu_sqlite)) == 2


def test_copy_and_xz_of_one_trace_are_refused(cpu_sqlite: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(cpu_sqlite, copy)
    with pytest.raises(BadInput, match=r"copies of one trace \(same content\)"):
        distinct_inputs([cpu_sqlite, copy])
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(cpu_sqlite, run / "trace.sqlite")
    xz = CPU_DIR / "trace.sqlite.xz"
    with pytest.raises(BadInput, match=rf"{run} and {xz}: copies of one trace"):
        distinct_inputs([run, xz])
    # a run directory and the trace inside it: the same file
    with pytest.raises(BadInput, match=r"the same file"):
        distinct_inputs([run, run / "trace.sqlite"])


def _resaved(src: Path, dst: Path, how: str) -> Path:
    """``src`` saved again without changing its events: ``VACUUM INTO``, or only its export time changed."""
    if how == "vacuum":
        con = sqlite3.connect(src)
        con.execute("VACUUM INTO ?", (str(dst),))
        con.close()
        return dst
    shutil.copyfile(src, dst)
    con = sqlite3.connect(dst)
    changed = con.execute(
        "UPDATE META_DATA_EXPORT SET value = '2030-01-01T00:00:00Z' WHERE name = 'EXPORT_TIME_UTC'"
    ).rowcount
    con.execute("create table dsocr_test_extra(x)")  # and one more table: still the same events
    con.commit()
    con.close()
    assert changed == 1
    return dst


@pytest.mark.parametrize("how", ["vacuum", "export-time"])
def test_resaved_copies_are_refused_by_content(cpu_sqlite: Path, tmp_path: Path, how: str) -> None:
    copy = _resaved(cpu_sqlite, tmp_path / "copy.sqlite", how)
    assert copy.read_bytes() != cpu_sqlite.read_bytes()
    with pytest.raises(BadInput, match=r"copies of one trace \(same content\), not two passes"):
        distinct_inputs([cpu_sqlite, copy])


def test_two_captures_of_one_study_are_passes(cpu_sqlite: Path, tmp_path: Path) -> None:
    other = _other_capture(cpu_sqlite, tmp_path / "other.sqlite")
    analysis = run_analysis([cpu_sqlite, other])
    assert len(analysis.traces) == 2
    assert analysis.repeats.passes == 4  # two files x two repeat ranges


def _info(file: str, mode: str, gpu: str | None = "NVIDIA H100 80GB HBM3") -> TraceInfo:
    gpus = ({"name": gpu},) if gpu else ()
    return TraceInfo(file, file, "2025.3", "3.20", "sqlite", gpus, True, True, 1, mode)


def test_stage_kind_differs_is_refused() -> None:
    a, b = _info("a.sqlite", "dsocr"), _info("b.sqlite", "foreign")
    with pytest.raises(BadInput, match=r"a.sqlite and b.sqlite: different stage kinds \(dsocr vs foreign"):
        check_same_study(a, b, frozenset({"sam"}), frozenset({"train"}))


def test_foreign_top_level_names_differ_is_refused() -> None:
    a, b = _info("a.sqlite", "foreign"), _info("b.sqlite", "foreign")
    check_same_study(a, b, frozenset({"step", "eval"}), frozenset({"eval", "step"}))  # same names: accepted
    with pytest.raises(BadInput, match=r"different top-level stage ranges \(not in both: eval, train\)"):
        check_same_study(a, b, frozenset({"step", "eval"}), frozenset({"step", "train"}))
    # dsocr traces: one contract, a stage missing in one (e.g. no baseline ranges) is not a different study
    check_same_study(_info("a", "dsocr"), _info("b", "dsocr"), frozenset({"sam", "clip"}), frozenset({"sam"}))


@pytest.mark.parametrize("status", ["interrupted", "failed"])
def test_partial_run_directory_warns(cpu_sqlite: Path, tmp_path: Path, status: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(cpu_sqlite, run / "trace.sqlite")
    (run / "manifest.json").write_text(json.dumps({"status": status}))
    warnings = run_analysis([run]).warnings
    partial = [w for w in warnings if "only part of the passes" in w]
    assert partial == [
        f"{run}: the capture's manifest status is '{status}': the trace holds only part of the passes "
        "(the report covers what was captured); recapture for a complete run"
    ]
    (run / "manifest.json").write_text(json.dumps({"status": "complete"}))
    assert not [w for w in run_analysis([run]).warnings if "only part" in w]


def test_report_without_sqlite_suggests_dsocr_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "trace.nsys-rep").write_bytes(b"x")
    with pytest.raises(BadInput) as exc:
        resolve_input(run)
    assert exc.value.message == f"{run}: has trace.nsys-rep but no trace.sqlite; export it first: dsocr export {run}"
