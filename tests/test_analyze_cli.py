"""``dsocr analyze`` end to end: outputs, --json, inputs it accepts, and bad inputs."""

from __future__ import annotations

import json
import lzma
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CPU_DIR, missing_fixture
from dsocr.cli import main
from dsocr.contract.errors import ExitCode

FILES = {"analysis.json", "report.md", "results.sqlite", "report.html", "summary.md", "plots"}


def _names(out: Path) -> list[str]:
    """The names in ``out`` (none when it was never made or was removed again)."""
    return sorted(p.name for p in out.rglob("*")) if out.exists() else []


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dsocr-cache"))
    for var in (
        "DSOCR_ANALYZE_OUT",
        "DSOCR_ANALYZE_FORMAT",
        "DSOCR_JSON",
        "DSOCR_QUIET",
        "DSOCR_VERBOSE",
        "DSOCR_MODE",
        "DSOCR_CROPS",
        "DSOCR_PROMPT_TOKENS",
        "DSOCR_MAX_NEW_TOKENS",
        "DSOCR_PREFILL_TOKENS",
        "DSOCR_PEAK_TFLOPS",
        "DSOCR_PEAK_TBPS",
        "DSOCR_GPU",
        "DSOCR_FULL_PROJECTION",
    ):
        monkeypatch.delenv(var, raising=False)


def test_h100_writes_every_file(capsys: pytest.CaptureFixture[str], h100_sqlite: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code, stdout, stderr = run(capsys, str(h100_sqlite), "--out", str(out))
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert stdout.strip().splitlines()[-1] == str(out)
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["trace"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert doc["trace"]["product_version"] == "2025.3.2.0"
    assert [s["stage"] for s in doc["stages"]] == ["prefill", "decode", "decode_step"]
    md = (out / "report.md").read_text()
    assert "## Stages" in md and "| decode | 3 |" in md
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("select count(*) from stages").fetchone() == (3,)
    assert con.execute("select count(*) from kernels").fetchone() == (len(doc["kernels"]),)
    # one projection row per operator call: only in results.sqlite unless --full-projection
    omitted = doc["nvtx_projection_omitted"]["rows"]
    assert omitted == 12874 and len(doc["nvtx_projection"]) == 5
    assert con.execute("select count(*) from nvtx_projection").fetchone() == (5 + omitted,)


def test_full_projection_flag_and_env(
    capsys: pytest.CaptureFixture[str], h100_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, stdout, stderr = run(capsys, str(h100_sqlite), "--out", str(tmp_path / "a"), "--json", "--full-projection")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert len(doc["nvtx_projection"]) == 5 + 12874 and doc["nvtx_projection_omitted"]["rows"] == 0
    monkeypatch.setenv("DSOCR_FULL_PROJECTION", "1")
    code, stdout, stderr = run(capsys, str(h100_sqlite), "--out", str(tmp_path / "b"), "--format", "json", "--json")
    assert code == 0, stderr
    assert len(json.loads(stdout)["nvtx_projection"]) == 5 + 12874


def test_json_to_stdout(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run(capsys, str(cpu_sqlite), "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    doc = json.loads(stdout)  # nothing but the JSON on stdout
    assert doc["schema_version"] == "1.0"
    assert doc["repeats"]["passes"] == 2
    # a CPU-only trace: exactly one warning line, CPU-side stages still reported
    assert stderr.count("\n") == 1 and stderr.startswith("dsocr: warning: ") and "no CUDA activity" in stderr
    assert {s["stage"] for s in doc["stages"]} >= {"repeat", "page", "sam", "decode_step"}
    assert doc["kernels"] == [] and doc["nvtx_projection"] == []


def test_format_selects_files(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, _ = run(capsys, str(cpu_sqlite), "--out", str(out), "--format", "json,sqlite", "-q")
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"analysis.json", "results.sqlite"}
    assert oct((out / "analysis.json").stat().st_mode & 0o777) != oct(0o600)


def test_run_directory_xz_and_several_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    xz = CPU_DIR / "trace.sqlite.xz"
    if not xz.exists():
        missing_fixture(str(CPU_DIR))
    rundir = tmp_path / "runs" / "r1"
    rundir.mkdir(parents=True)
    (rundir / "trace.sqlite").write_bytes(lzma.decompress(xz.read_bytes()))
    con = sqlite3.connect(rundir / "trace.sqlite")  # another capture of the study: the same ranges 1 us later
    con.execute('UPDATE NVTX_EVENTS SET start = start + 1000, "end" = "end" + 1000')
    con.commit()
    con.close()
    (rundir / "manifest.json").write_text("{}")
    out = tmp_path / "o"
    code, stdout, _ = run(capsys, str(rundir), str(xz), "--out", str(out), "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert [t["file"] for t in doc["traces"]] == [str(rundir), str(xz)]
    assert doc["repeats"]["passes"] == 4  # two files x two repeat ranges
    sam = next(s for s in doc["stages"] if s["stage"] == "sam")
    assert sam["instances"] == 8


@pytest.mark.slow
def test_no_argument_analyzes_bundled_sample(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, _, stderr = run(capsys, "--out", str(out), "--format", "json,html")
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} == {"analysis.json", "report.html", "summary.md", "plots"}
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["trace"]["file"].endswith("h100-gundam-2p2r")
    assert doc["trace"]["stage_mode"] == "dsocr" and doc["repeats"]["passes"] == 2
    # the sample is a run directory: its manifest and timing files give the workload and the overhead table
    assert doc["manifest"]["settings"]["mode"] == "gundam" and doc["baseline"]["profiled"] is False
    an = doc["analytic"]
    assert an["available"] and an["workload_source"] == "run" and an["pages_per_pass"] == 2
    assert an["peak"]["source"] == "table: H100 SXM5 80GB"
    rows = {r["stage"]: r for r in an["stage_metrics"]}
    assert 0 < rows["model"]["mfu_busy"] < 1 and 0 < rows["decode"]["mbu_busy"] < 1
    html = (out / "report.html").read_text()
    assert "Model-level MFU is not available" not in html and "No unprofiled baseline" not in html
    summary = (out / "summary.md").read_text()
    assert "MFU" in summary and "NVIDIA H100 80GB HBM3" in summary
    assert sorted(p.name for p in (out / "plots").iterdir())[0] == "categories.svg"


def _not_nsys_sqlite(p: Path) -> Path:
    con = sqlite3.connect(p)
    con.execute("create table t(x)")
    con.commit()
    con.close()
    return p


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda d: d / "missing.sqlite", ExitCode.NOT_FOUND, "no such file"),
        (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hello"))[0], ExitCode.BAD_INPUT, "not an SQLite"),
        (lambda d: _not_nsys_sqlite(d / "other.sqlite"), ExitCode.BAD_INPUT, "other.sqlite"),
        (
            lambda d: (d / "bad.sqlite.xz", (d / "bad.sqlite.xz").write_bytes(b"\xfd7zXZ\x00garbage"))[0],
            ExitCode.BAD_INPUT,
            "not a valid .xz",
        ),
        (lambda d: (d / "emptydir", (d / "emptydir").mkdir())[0], ExitCode.BAD_INPUT, "no trace.sqlite"),
        (
            lambda d: (d / "run", (d / "run").mkdir(), (d / "run" / "trace.nsys-rep").write_bytes(b"x"))[0],
            ExitCode.BAD_INPUT,
            "export it first: dsocr export",
        ),
    ],
)
def test_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path, make: object, code: int, words: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    got, stdout, stderr = run(capsys, str(path), "--out", str(out))
    assert got == code
    assert stderr.count("\n") == 1 and stderr.startswith("dsocr: error: ")
    assert str(path) in stderr and words in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()


def test_truncated_export(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.sqlite"
    data = cpu_sqlite.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    got, _, stderr = run(capsys, str(cut), "--out", str(tmp_path / "out"))
    assert got == ExitCode.BAD_INPUT
    assert stderr.count("\n") == 1 and str(cut) in stderr
    assert not (tmp_path / "out").exists()


def test_unknown_format_and_out_is_a_file(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path) -> None:
    got, _, stderr = run(capsys, str(cpu_sqlite), "--format", "md,pdf", "--out", str(tmp_path / "o"))
    assert got == ExitCode.USAGE and "unknown format pdf" in stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    got, _, stderr = run(capsys, str(cpu_sqlite), "--out", str(afile), "-q")
    assert (
        got == ExitCode.USAGE
        and stderr == f"dsocr: error: --out {afile}: exists and is not a directory; choose another --out\n"
    )


def test_failed_write_leaves_no_partial_files(
    capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dsocr.report.sqliteout as so

    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(so, "build_sqlite", boom)
    out = tmp_path / "o"
    got, _, _ = run(capsys, str(cpu_sqlite), "--out", str(out), "-q")
    assert got != 0
    assert _names(out) == []  # neither the JSON nor the Markdown, no temp files


def test_console_script_end_to_end(cpu_sqlite: Path, tmp_path: Path) -> None:
    exe = shutil.which("dsocr", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = tmp_path / "o"
    res = subprocess.run(
        [exe, "analyze", str(cpu_sqlite), "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    assert {p.name for p in out.iterdir()} == FILES


def test_failed_html_render_writes_nothing(
    capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.html, summary.md and plots/ belong to the same all-or-nothing group as the other files."""
    import dsocr.report.html as html

    def boom(*_args: object, **_kw: object) -> str:
        raise OSError("template broke")

    monkeypatch.setattr(html, "render_summary_md", boom)
    out = tmp_path / "o"
    got, _, _ = run(capsys, str(cpu_sqlite), "--out", str(out), "-q")
    assert got != 0
    assert _names(out) == []


def test_failed_plot_write_writes_nothing(
    capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while moving the plots in (the set's last rename) leaves no file and no empty plots/ directory."""
    import os

    import dsocr.report.report_set as report_set

    real = os.replace

    def failing(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "plots":
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(report_set.os, "replace", failing)
    out = tmp_path / "o"
    got, _, _ = run(capsys, str(cpu_sqlite), "--out", str(out), "-q")
    assert got != 0
    assert _names(out) == []  # no file, no empty plots/ (nor the --out directory it made)


def test_plots_and_summary_rendered_once(
    capsys: pytest.CaptureFixture[str], cpu_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dsocr.report.html as html
    import dsocr.report.summary as summ

    calls = {"plots": 0, "summary": 0}
    real_plots, real_build = html.render_plots, summ.build

    def plots(view):  # type: ignore[no-untyped-def]
        calls["plots"] += 1
        return real_plots(view)

    def build(view, *rest):  # type: ignore[no-untyped-def]
        calls["summary"] += 1
        return real_build(view, *rest)

    monkeypatch.setattr(html, "render_plots", plots)
    monkeypatch.setattr(summ, "build", build)
    got, _, stderr = run(capsys, str(cpu_sqlite), "--out", str(tmp_path / "o"), "-q")
    assert got == 0, stderr
    assert calls == {"plots": 1, "summary": 1}


@pytest.mark.parametrize(
    ("content", "words", "code"),
    [
        (None, "calibration file not found", ExitCode.NOT_FOUND),
        ("[1, 2]", "not a dsocr calibration file", ExitCode.BAD_INPUT),
        (b"\x00\xff\xfe", "not a text file", ExitCode.BAD_INPUT),
    ],
)
def test_bad_calibration_file(
    capsys: pytest.CaptureFixture[str],
    cpu_sqlite: Path,
    tmp_path: Path,
    content: str | bytes | None,
    words: str,
    code: ExitCode,
) -> None:
    cal = tmp_path / "cal.json"
    if isinstance(content, str):
        cal.write_text(content)
    elif content is not None:
        cal.write_bytes(content)
    out = tmp_path / "out"
    got, stdout, stderr = run(capsys, str(cpu_sqlite), "--calibration", str(cal), "--out", str(out))
    assert got == code
    assert stderr.count("\n") == 1 and stderr.startswith("dsocr: error: ") and str(cal) in stderr and words in stderr
    assert "Traceback" not in stderr and stdout == "" and not out.exists()
