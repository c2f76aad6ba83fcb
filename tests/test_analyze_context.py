"""``dsocr analyze --context auto|max|fixed:N`` (and ``DSOCR_CONTEXT``): decode FLOPs and MFU follow it.

The run directory of test_analyze_analytic: one gundam 2x3 page, 4 new tokens (3 decode steps),
2 repeats. Attention in one decode step costs 4 x 10 heads x 128 head_dim x 12 layers FLOPs per
key position (QK and AV), so changing the contexts of the 3 steps by D positions in all changes
the decode tensor-core FLOPs by exactly 61,440 x D.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsocr.analytic.workload import ContextMode, parse_context
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.workload_from_run import WorkloadFlags
from dsocr.cli import main
from dsocr.contract.errors import BadInput
from test_analyze_analytic import H100_TFLOPS, make_run_dir

ATT_PER_POSITION = 4 * 10 * 128 * 12


def _rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["stage"]: r for r in doc["analytic"]["stage_metrics"]}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path)[0]


def test_context_modes_change_decode_flops_and_mfu(run: Path) -> None:
    docs = {
        mode: run_analysis([run], workload=WorkloadFlags(context=parse_context(mode))).to_dict()
        for mode in ("auto", "max", "fixed:4096")
    }
    auto, top, fixed = (_rows(docs[m]) for m in ("auto", "max", "fixed:4096"))
    length = docs["auto"]["analytic"]["workload"]["prefill_length"]
    # auto: steps at L+1, L+2, L+3 (sum 3L + 6); max: 3 x (L + 3); fixed:4096: 3 x 4096
    assert docs["auto"]["analytic"]["workload"]["decode_context"] == {
        "first": length + 1,
        "last": length + 3,
        "mean": length + 2,
    }
    assert docs["max"]["analytic"]["workload"]["decode_context"]["first"] == length + 3
    assert top["decode"]["tensor_flops"] - auto["decode"]["tensor_flops"] == ATT_PER_POSITION * 3
    assert fixed["decode"]["tensor_flops"] - auto["decode"]["tensor_flops"] == ATT_PER_POSITION * (
        3 * 4096 - (3 * length + 6)
    )
    assert [docs[m]["analytic"]["workload"]["context_mode"] for m in docs] == ["auto", "max", "fixed:4096"]
    for rows in (top, fixed):
        busy = rows["decode"]["gpu_busy_ns"]
        assert busy == auto["decode"]["gpu_busy_ns"]  # the measurement is the same, only the work counted differs
        assert rows["decode"]["mfu_busy"] == pytest.approx(rows["decode"]["flops"] / (H100_TFLOPS * 1e3 * busy))
        assert rows["decode"]["mfu_busy"] > auto["decode"]["mfu_busy"]
        assert rows["model"]["flops"] - auto["model"]["flops"] == rows["decode"]["flops"] - auto["decode"]["flops"]
        # vision and prefill do not depend on the decode context
        assert (rows["prefill"]["flops"], rows["vision"]["flops"]) == (
            auto["prefill"]["flops"],
            auto["vision"]["flops"],
        )


def test_context_alone_is_not_a_workload_flag() -> None:
    assert not WorkloadFlags(context=ContextMode("max")).given


def test_fixed_context_within_the_window() -> None:
    assert parse_context("fixed:8192") == ContextMode("fixed", 8192)  # the whole window
    with pytest.raises(BadInput, match="'fixed:8193' exceeds the model's 8192-position window"):
        parse_context("fixed:8193")
    with pytest.raises(BadInput, match="use auto, max or fixed:N"):
        parse_context("fixed:0")


def _analyze(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args, "-q"])
    code = exc.value.code
    return (code if isinstance(code, int) else 1), " ".join(capsys.readouterr().err.replace("\u2502", " ").split())


def test_cli_option_and_envvar(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = _analyze([str(run), "--out", str(tmp_path / "a"), "--format", "json,md,html"], capsys)
    assert code == 0, err
    code, err = _analyze(
        [str(run), "--out", str(tmp_path / "f"), "--format", "json,md", "--context", "fixed:4096"], capsys
    )
    assert code == 0, err
    monkeypatch.setenv("DSOCR_CONTEXT", "max")
    code, err = _analyze([str(run), "--out", str(tmp_path / "m"), "--format", "json,md"], capsys)
    assert code == 0, err
    docs = {k: json.loads((tmp_path / k / "analysis.json").read_text()) for k in ("a", "f", "m")}
    assert [docs[k]["analytic"]["workload"]["context_mode"] for k in ("a", "f", "m")] == ["auto", "fixed:4096", "max"]
    assert _rows(docs["m"])["decode"]["tensor_flops"] - _rows(docs["a"])["decode"]["tensor_flops"] == (
        ATT_PER_POSITION * 3
    )
    length = docs["m"]["analytic"]["workload"]["prefill_length"]
    assert (
        f"decode context max ({length + 3:,} to {length + 3:,} tokens per step)"
        in (tmp_path / "m" / "report.md").read_text()
    )
    html = (tmp_path / "a" / "report.html").read_text()
    assert "analytic workload: context mode" in html
    monkeypatch.setenv("DSOCR_CONTEXT", "soon")  # rejected, never ignored
    code, err = _analyze([str(run), "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and not (tmp_path / "bad").exists()
    assert "Invalid value for '--context' (env var: 'DSOCR_CONTEXT'): decode context 'soon' is not understood" in err


def test_capture_passes_dsocr_context_to_its_analysis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture's own analysis honours DSOCR_CONTEXT; a bad value stops the capture before it starts."""
    from functools import partial

    from dsocr.capture import driver

    seen: list[Any] = []

    def fake(settings: driver.CaptureSettings, reporter: object, **kw: Any) -> driver.CaptureResult:
        seen.append(kw["analyze"])
        return driver.CaptureResult(run_dir=tmp_path / "r", manifest={})

    monkeypatch.setattr(driver, "run_capture", fake)
    monkeypatch.setenv("DSOCR_CONTEXT", "fixed:2048")
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--device", "cpu", "--quiet"])
    assert exc.value.code == 0
    assert isinstance(seen[0], partial) and seen[0].keywords == {"context": "fixed:2048"}
    monkeypatch.setenv("DSOCR_CONTEXT", "longest")
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--device", "cpu", "--quiet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(seen) == 1 and not (tmp_path / "x").exists()
    assert err.startswith("dsocr: error: DSOCR_CONTEXT (the analysis's decode context): decode context 'longest'")
