"""``dsocr diff``: changes per stage, kernel and operator, judged against the runs' own spread."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from dsocr.report import diff as d
from dsocr.report.view import Stat
from report_views import full_view, h100_analysis


@attrs.frozen
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``dsocr diff ARGS`` in-process through the real entry point (exit code, stdout, stderr)."""
    from dsocr.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["diff", *args])
        out, err = capsys.readouterr()
        return Result(int(exc.value.code or 0), out, err)

    return run


@pytest.fixture(scope="module")
def cpu_doc(cpu_sqlite: Path) -> dict[str, Any]:
    """The CPU fixture: two repeats, so two passes with a real spread."""
    from dsocr.analyze.pipeline import run_analysis

    doc: dict[str, Any] = json.loads(json.dumps(run_analysis([cpu_sqlite]).to_dict(), default=str))
    assert doc["repeats"]["passes"] == 2
    return doc


def scaled(doc: dict[str, Any], stage: str, factor: float) -> dict[str, Any]:
    """A copy of ``doc`` whose ``stage`` range times are ``factor`` times longer in every pass."""
    out = copy.deepcopy(doc)
    for row in out["repeats"]["per_pass"]:
        if row["stage"] == stage:
            row["cpu_ns"] = round(row["cpu_ns"] * factor)
    return out


def write(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    p = tmp / name
    p.write_text(json.dumps(doc))
    return p


def test_change_arithmetic() -> None:
    c = d.Change("stage", "decode", "profiled range", "ns", 100.0, 130.0, 5.0, 12.0)
    assert c.delta == 30.0 and c.rel == pytest.approx(0.3)
    assert c.noise == pytest.approx(2 * 13.0)  # 2 x sqrt(25 + 144)
    assert c.significant is True and c.verdict == "significant"
    assert d.Change("stage", "x", "m", "ns", 100.0, 120.0, 5.0, 12.0).verdict == "within noise"
    assert d.Change("stage", "x", "m", "ns", 100.0, 300.0, None, 1.0).verdict == "spread unknown"
    assert d.Change("kernel", "x", "k", "ns", None, 1.0).verdict == "only in B"
    assert d.Change("kernel", "x", "k", "ns", 1.0, None).verdict == "only in A"


def test_same_run_is_within_noise(cpu_doc: dict[str, Any], tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", cpu_doc)
    res = d.diff_paths(a, a)
    assert res.stages and not res.single_pass
    assert {c.verdict for c in res.stages} == {"within noise"}
    assert all(c.delta == 0 for c in res.stages)


def test_slower_decode_is_significant(cpu_doc: dict[str, Any], tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", cpu_doc)
    b = write(tmp_path, "b.json", scaled(cpu_doc, "decode", 2.0))
    res = d.diff_paths(a, b)
    change = next(c for c in res.stages if c.stage == "decode" and c.name == "profiled range")
    per_pass = [r["cpu_ns"] for r in cpu_doc["repeats"]["per_pass"] if r["stage"] == "decode"]
    mean = sum(per_pass) / len(per_pass)
    sd = Stat.of(per_pass).stddev
    assert sd is not None and change.a == pytest.approx(mean) and change.b == pytest.approx(2 * mean, rel=1e-6)
    assert change.rel == pytest.approx(1.0, rel=1e-6)
    assert change.noise == pytest.approx(2 * math.sqrt(sd**2 + (2 * sd) ** 2), rel=1e-6)
    assert change.verdict == "significant"
    # prefill did not change
    pre = next(c for c in res.stages if c.stage == "prefill" and c.name == "profiled range")
    assert pre.delta == 0 and pre.verdict == "within noise"
    md = d.render(res, "md")
    assert "| profiled range |" in md and "**significant**" in md and "+100.0%" in md


def test_small_change_inside_the_spread(cpu_doc: dict[str, Any], tmp_path: Path) -> None:
    per_pass = [r["cpu_ns"] for r in cpu_doc["repeats"]["per_pass"] if r["stage"] == "decode"]
    cv = Stat.of(per_pass).cv
    assert cv is not None and cv > 0
    factor = 1 + cv / 4  # well under 2 x the combined spread
    res = d.diff_paths(write(tmp_path, "a.json", cpu_doc), write(tmp_path, "b.json", scaled(cpu_doc, "decode", factor)))
    change = next(c for c in res.stages if c.stage == "decode" and c.name == "profiled range")
    assert change.delta and change.delta > 0 and change.verdict == "within noise"


def test_single_pass_h100_says_spread_unknown(h100_sqlite: Path, tmp_path: Path, cli: Any) -> None:
    doc = h100_analysis(str(h100_sqlite))
    run = tmp_path / "run"
    run.mkdir()
    write(run, "analysis.json", doc)
    res = cli(str(run), str(run / "analysis.json"))
    assert res.returncode == 0, res.stderr
    assert "spread is unknown" in res.stdout and "spread unknown" in res.stdout
    # top kernels of decode are compared by name, per pass
    top = next(k for k in doc["top_kernels"] if k["stage"] == "decode" and k["rank"] == 1)
    assert f"| {top['name']} | {top['total_ns'] / 1e6:,.3f} ms |" in res.stdout
    assert "## Top operators" in res.stdout and "aten::_grouped_mm" in res.stdout


def test_cli_out_and_json(cpu_doc: dict[str, Any], tmp_path: Path, cli: Any) -> None:
    a = write(tmp_path, "a.json", cpu_doc)
    b = write(tmp_path, "b.json", scaled(cpu_doc, "decode", 2.0))
    out = tmp_path / "out"
    res = cli(str(a), str(b), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    html = (out / "diff.html").read_text()
    assert "significant" in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert (out / "diff.md").read_text().startswith("# dsocr diff")
    res = cli(str(a), str(b), "--json")
    doc = json.loads(res.stdout)
    dec = next(r for r in doc["stages"] if r["stage"] == "decode" and r["name"] == "profiled range")
    assert dec["verdict"] == "significant" and dec["rel"] == pytest.approx(1.0, rel=1e-6)


def test_kernel_spread_estimated_from_stage_cv() -> None:
    v = full_view()
    slower = attrs.evolve(v, kernels=tuple(attrs.evolve(k, total_ns=k.total_ns * 3) for k in v.kernels))
    res = d.diff(d.Side("a", v), d.Side("b", slower))
    k = next(c for c in res.kernels if c.name.startswith("nvjet"))
    cv = v.stage("decode").gpu_busy_ns.cv  # type: ignore[union-attr]
    assert k.estimated_spread and k.sd_a == pytest.approx(40e6 / 3 * cv)
    assert k.a == pytest.approx(40e6 / 3) and k.b == pytest.approx(40e6)  # per pass (3 passes)
    assert k.verdict == "significant"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda t: t / "missing", "no such file or directory; pass a run directory or an analysis.json"),
        (lambda t: t, "holds no analysis.json; run `dsocr analyze"),
        (lambda t: _text(t / "bad.json", "{not json"), "not valid JSON"),
        (lambda t: _text(t / "other.json", '{"a": 1}'), "not an analysis.json (no schema_version/stages)"),
        (lambda t: _text(t / "v9.json", '{"schema_version": "9.0", "stages": []}'), "analysis schema 9.0"),
    ],
)
def test_bad_inputs(tmp_path: Path, setup: Any, message: str, cli: Any) -> None:
    path = setup(tmp_path)
    res = cli(str(path), str(path))
    assert res.returncode in (3, 4)
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def _text(p: Path, s: str) -> Path:
    p.write_text(s)
    return p


def test_json_units_say_what_the_values_are() -> None:
    """Stage and kernel times are stored in ns; the JSON says so (Markdown/HTML show them as ms)."""
    assert {unit for _key, _label, unit, _get in d.STAGE_METRICS} == {"ns", "pct", "count"}
    assert "2.5" in d.fmt_value(2_500_000.0, "ns") and "ms" in d.fmt_value(2_500_000.0, "ns")


def test_gpu_run_against_cpu_only_run_judges_no_gpu_metric() -> None:
    from dsocr.report.diff_notes import comparability_warnings

    gpu = full_view()
    cpu_stages = tuple(
        attrs.evolve(s, gpu_busy_ns=Stat.of([0.0] * len(s.gpu_busy_ns.values)), has_gpu=False) for s in gpu.stages
    )
    cpu = attrs.evolve(gpu, stages=cpu_stages, kernels=(), operators=(), has_gpu=False)
    result = d.diff(d.Side("gpu", gpu), d.Side("cpu", cpu))
    gpu_rows = [c for c in result.stages if c.name in {"GPU busy", "GPU idle", "kernels", "launches", "MFU (busy)"}]
    assert gpu_rows and all(c.b is None and c.verdict == "only in A" for c in gpu_rows)
    assert not [c for c in result.stages if c.verdict == "significant" and c.name != "profiled range"]
    warnings = comparability_warnings(Path("gpu"), Path("cpu"), result)
    assert warnings[0].startswith("B is a CPU-only run (its trace has no CUDA activity), A ran on a GPU")
