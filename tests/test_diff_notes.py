"""``dsocr diff``: a warning per setting that differs between the runs, and the headline of the largest changes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dsocr.cli import main

SETTINGS: dict[str, Any] = {
    "device": "cuda",
    "mode": "gundam",
    "pages": ["pages/text-01-article.png", "pages/mixed-02-table.png"],
    "max_new_tokens": 16,
    "dtype": "auto",
    "op_ranges": False,
    "module_ranges": False,
}


@pytest.fixture(scope="module")
def cpu_doc(cpu_sqlite: Path) -> dict[str, Any]:
    """The CPU fixture's analysis (two passes)."""
    from dsocr.analyze.pipeline import run_analysis

    doc: dict[str, Any] = json.loads(json.dumps(run_analysis([cpu_sqlite]).to_dict(), default=str))
    return doc


def _run_dir(tmp: Path, name: str, doc: dict[str, Any], decode_factor: float = 1.0, **changed: Any) -> Path:
    """A run directory with ``doc`` (decode ``decode_factor`` times longer) and a manifest of SETTINGS + changed."""
    run = tmp / name
    run.mkdir()
    out = copy.deepcopy(doc)
    for row in out["repeats"]["per_pass"]:
        if row["stage"] == "decode":
            row["cpu_ns"] = round(row["cpu_ns"] * decode_factor)
    (run / "analysis.json").write_text(json.dumps(out))
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "settings": {**SETTINGS, **changed}}))
    return run


def _diff(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["diff", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_different_settings_warn_one_line_each(
    cpu_doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _run_dir(tmp_path, "a", cpu_doc)
    b = _run_dir(
        tmp_path,
        "b",
        cpu_doc,
        device="cpu",
        mode="tiny",
        dtype="float32",
        max_new_tokens=4,
        pages=["one.png"],
        op_ranges=True,
    )
    code, out, err = _diff(capsys, str(a), str(b), "--out", str(tmp_path / "o"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("dsocr: warning: ")]
    assert warnings == [
        "dsocr: warning: A and B differ in device (cuda vs cpu): CPU and GPU runs are not comparable",
        "dsocr: warning: A and B differ in mode (gundam vs tiny): the vision workload differs",
        "dsocr: warning: A and B differ in dtype (auto vs float32): the arithmetic differs",
        "dsocr: warning: A and B differ in pages (2 (text-01-article.png, mixed-02-table.png) vs 1 (one.png)): "
        "the inputs differ",
        "dsocr: warning: A and B differ in max_new_tokens (16 vs 4): decode does a different amount of work",
        "dsocr: warning: A and B differ in --op-ranges (off vs on): operator ranges add profiling overhead to one side",
    ]
    md = (tmp_path / "o" / "diff.md").read_text()
    assert "> **Warning**: A and B differ in device (cuda vs cpu)" in md and md.startswith("# dsocr diff\n\n")
    html = (tmp_path / "o" / "diff.html").read_text()
    assert '<p class="warning">Warning: A and B differ in mode (gundam vs tiny)' in html
    code, out, _ = _diff(capsys, str(a), str(b), "--json")
    assert len(json.loads(out)["warnings"]) == 6


def test_same_settings_no_warning_and_headline(
    cpu_doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _run_dir(tmp_path, "a", cpu_doc)
    b = _run_dir(tmp_path, "b", cpu_doc, decode_factor=2.0)
    code, out, err = _diff(capsys, str(a), str(b))
    assert code == 0 and "warning" not in err
    head = next(line for line in out.splitlines() if "Largest significant changes" in line)
    assert head.startswith("**Largest significant changes: decode profiled range +100.0% (")
    code, out, _ = _diff(capsys, str(a), str(b), "--json")
    doc = json.loads(out)
    assert doc["warnings"] == [] and doc["headline"].startswith("Largest significant changes: decode profiled range")
    code, out, _ = _diff(capsys, str(a), str(a), "--json")
    assert json.loads(out)["headline"].startswith("No significant stage change")
