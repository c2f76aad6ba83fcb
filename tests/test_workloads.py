"""Named workloads (issue 12, item 8): dsocr-standard-v1 and dsocr-quick-v1, selected with --workload
on capture and model, recorded in manifest.json and shown in the report header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsocr.capture import driver, manifest
from dsocr.capture.pages import A4, SPECS
from dsocr.cli import main
from dsocr.contract.errors import BadInput, ExitCode
from dsocr.model import workloads
from dsocr.model.workloads import QUICK, STANDARD, label, matching, resolve


def test_standard_definition_is_the_research_one() -> None:
    d = STANDARD.to_json()
    assert d == {
        "name": "dsocr-standard-v1",
        "pages": "standard",
        "page_count": 12,
        "page_sizes": [[1240, 1754]] * 10 + [[1754, 1240], [1600, 900]],
        "mode": "gundam",
        "base_size": 1024,
        "image_size": 640,
        "crop_mode": True,
        "crops": "auto",
        "decoding": "greedy",
        "max_new_tokens": 512,
        "prompt_tokens": 12,
        "repeats": 3,
    }
    assert QUICK.name == "dsocr-quick-v1" and QUICK.max_new_tokens == 32 and workloads.DEFAULT is QUICK
    # the definition's pages are the shipped set, in order; A4 portrait is the most common size
    assert tuple(spec.size for spec in SPECS) == STANDARD.page_sizes and STANDARD.page_size == A4


def test_capture_settings_defaults_are_the_quick_workload() -> None:
    s = driver.CaptureSettings()
    assert matching(s.to_json()) is QUICK
    assert manifest.workload_record(s.to_json()) == {**QUICK.to_json(), "selected": "defaults"}


def test_resolve_fills_checks_and_names() -> None:
    none = {k: None for k in workloads.FIXED}
    fixed, named = resolve(None, none)
    assert (fixed["max_new_tokens"], fixed["repeats"], fixed["pages"], named) == (32, 3, (), QUICK)
    fixed, named = resolve("dsocr-standard-v1", none)
    assert (fixed["mode"], fixed["crops"], fixed["max_new_tokens"], fixed["repeats"], named) == (
        "gundam",
        "auto",
        512,
        3,
        STANDARD,
    )
    # a flag that agrees is accepted; one that contradicts is refused, naming the flag and its variable
    assert resolve("dsocr-standard-v1", {**none, "max_new_tokens": 512, "mode": "GUNDAM"})[1] is STANDARD
    with pytest.raises(BadInput) as exc:
        resolve("dsocr-standard-v1", {**none, "max_new_tokens": 32})
    assert exc.value.message == (
        "--workload dsocr-standard-v1 fixes --max-new-tokens 512, --max-new-tokens 32 contradicts it: "
        "drop --max-new-tokens (or DSOCR_MAX_NEW_TOKENS) or drop --workload"
    )
    with pytest.raises(BadInput, match="fixes the standard page set, a page list contradicts it"):
        resolve("dsocr-standard-v1", {**none, "pages": (Path("a.png"),)})
    # without --workload, flags simply make a custom workload
    fixed, named = resolve(None, {**none, "max_new_tokens": 64})
    assert fixed["max_new_tokens"] == 64 and named is None
    with pytest.raises(BadInput, match="workload 'v9' is unknown: use one of dsocr-quick-v1, dsocr-standard-v1"):
        resolve("v9", none)


def test_labels() -> None:
    settings: dict[str, Any] = driver.CaptureSettings(max_new_tokens=512).to_json()
    assert label(manifest.workload_record(settings), settings) == (
        "dsocr-standard-v1 (12 standard pages, gundam 1024/640 crops, greedy, 512 new tokens, 3 repeats)"
    )
    custom = driver.CaptureSettings(max_new_tokens=16, repeats=2, pages=(Path("p.png"),)).to_json()
    record = manifest.workload_record(custom)
    assert record == {"name": None, "closest": "dsocr-quick-v1", "differs": ["pages", "max_new_tokens", "repeats"]}
    text = "custom (differs from dsocr-quick-v1 in pages, max_new_tokens, repeats)"
    assert label(record, custom) == text
    assert label(None, custom) == text  # a manifest written before the record existed: inferred from its settings
    assert label(None, None) is None  # a foreign trace


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def test_capture_workload_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[driver.CaptureSettings] = []

    def fake(settings: driver.CaptureSettings, reporter: object, **_: object) -> driver.CaptureResult:
        seen.append(settings)
        return driver.CaptureResult(run_dir=tmp_path / "r", manifest={})

    monkeypatch.setattr(driver, "run_capture", fake)
    for var in ("DSOCR_WORKLOAD", "DSOCR_MAX_NEW_TOKENS", "DSOCR_REPEATS", "DSOCR_MODE", "DSOCR_CROPS"):
        monkeypatch.delenv(var, raising=False)
    argv = ["capture", "--device", "cpu", "--quiet"]
    assert _run([*argv, "--workload", "dsocr-standard-v1"], capsys)[0] == ExitCode.OK
    assert _run(argv, capsys)[0] == ExitCode.OK
    monkeypatch.setenv("DSOCR_WORKLOAD", "dsocr-standard-v1")
    assert _run([*argv, "--repeats", "3"], capsys)[0] == ExitCode.OK  # agrees with it
    got = [(s.workload, s.max_new_tokens, s.repeats, s.mode, s.crops, s.pages) for s in seen]
    assert got == [
        ("dsocr-standard-v1", 512, 3, "gundam", "auto", ()),
        (None, 32, 3, "gundam", "auto", ()),
        ("dsocr-standard-v1", 512, 3, "gundam", "auto", ()),
    ]
    assert manifest.workload_record(seen[0].to_json())["selected"] == "--workload"
    code, _, err = _run([*argv, "--max-new-tokens", "32", "--out", str(tmp_path / "x")], capsys)
    assert code == ExitCode.USAGE and len(seen) == 3 and not (tmp_path / "x").exists()
    assert err == (
        "dsocr: error: --workload dsocr-standard-v1 fixes --max-new-tokens 512, --max-new-tokens 32 contradicts "
        "it: drop --max-new-tokens (or DSOCR_MAX_NEW_TOKENS) or drop --workload\n"
    )


def test_model_workload_option(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DSOCR_WORKLOAD", "DSOCR_MAX_NEW_TOKENS", "DSOCR_IMAGE_SIZE", "DSOCR_MODE", "DSOCR_CROPS"):
        monkeypatch.delenv(var, raising=False)
    code, out, _ = _run(["model", "--workload", "dsocr-standard-v1", "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    # one A4 page: gundam picks a 2x3 grid, 256 global + 6 x 100 crop tokens + 46 newlines + 1 separator
    w = doc["workload"]
    assert (w["crop_grid"], w["image_embeddings"], w["new_tokens"], w["decode_steps"]) == ([2, 3], 903, 512, 511)
    assert doc["named_workload"] == {**STANDARD.to_json(), "estimate": "one page"}
    code, out, _ = _run(["model"], capsys)
    assert code == 0 and "- workload: custom (not a named workload)" in out  # the 2x2 default is no A4 page
    code, out, _ = _run(["model", "--image-size", "1240x1754"], capsys)
    assert "- workload **dsocr-quick-v1 (12 standard pages" in out
    code, out, _ = _run(["model", "--workload", "dsocr-standard-v1", "--image-size", "1600x900"], capsys)
    assert code == 0 and "- mode **gundam**, crop grid 2x1 (chosen for a 1600x900 image)" in out
    code, _, err = _run(["model", "--workload", "dsocr-standard-v1", "--image-size", "1000x1000"], capsys)
    assert code == ExitCode.USAGE and err.startswith(
        "dsocr: error: --workload dsocr-standard-v1 has pages of 1240x1754, 1754x1240, 1600x900, "
        "--image-size 1000x1000 contradicts it"
    )
    code, _, err = _run(["model", "--workload", "dsocr-standard-v1", "--crops", "3x1"], capsys)
    assert code == ExitCode.USAGE and "fixes --crops auto, --crops 3x1 contradicts it" in err
