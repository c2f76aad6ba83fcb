"""A real `dsocr capture --device cpu` under nsys: shrunk replica, tiny mode, 1 page, 2 repeats, 3 tokens.

The whole pipeline (inputs, nsys profile of the worker, export, range check, manifest, analyze) but the
baseline pass, to stay well under a minute on two cores.

Needs an nsys (Debian's 2023.4 from `bash scripts/install-nsys.sh`, found through DSOCR_NSYS_HOME
or ./.tools/nsys) and the capture extra (torch, transformers, nvtx); skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from dsocr.capture import nsys as nsys_mod
from dsocr.capture.pages import shipped_dir
from dsocr.cli import main
from dsocr.contract.errors import EnvironmentProblem

REPO = Path(__file__).resolve().parents[1]


def _nsys() -> Path | None:
    try:
        return nsys_mod.find(cwd=REPO).path
    except EnvironmentProblem:
        return None


NSYS = _nsys()
MISSING = [m for m in ("torch", "transformers", "nvtx") if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.nsys,
    pytest.mark.torch,
    pytest.mark.slow,
    pytest.mark.skipif(NSYS is None, reason="no nsys (run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME)"),
    pytest.mark.skipif(bool(MISSING), reason=f"capture extra missing: {', '.join(MISSING)}"),
]


def _ranges(sqlite: Path) -> list[tuple[str, int | None]]:
    with sqlite3.connect(sqlite) as con:
        return con.execute(
            "SELECT coalesce(e.text, s.value), e.int64Value FROM NVTX_EVENTS e LEFT JOIN StringIds s ON s.id = e.textId"
            " WHERE e.eventType = 59 ORDER BY e.start"
        ).fetchall()


def test_cpu_capture_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    page = shipped_dir() / "text-04-letter.png"
    argv = ["capture", "--device", "cpu", "--mode", "tiny", "--repeats", "2", "--max-new-tokens", "3"]
    argv += ["--warmup", "1", "--shrink", "1,1,2,512,8", "--pages", str(page), "--out", str(run), "--nsys", str(NSYS)]
    argv += ["--no-baseline"]  # the baseline pass is the same worker again (tests/test_driver.py covers it)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 0, err

    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["analysis"] == "done", m.get("failure")
    for name in ("trace.nsys-rep", "trace.sqlite", "timing.json", "analysis.json", "report.md"):
        assert (run / name).is_file(), name

    # the export holds the contract's ranges in order, warm-up outside the capture range
    names = [n for n, _ in _ranges(run / "trace.sqlite")]
    assert "warmup" not in names
    assert names[0] == "capture"
    per_page = ["page", "vision", "sam", "clip", "projector", "prefill", "decode", "decode_step", "decode_step"]
    assert names[1:] == ["repeat", *per_page, "repeat", *per_page]
    payloads = [(n, p) for n, p in _ranges(run / "trace.sqlite") if n in ("repeat", "page", "decode_step")]
    assert payloads == [("repeat", 0), ("page", 0), ("decode_step", 0), ("decode_step", 1)] * 1 + [
        ("repeat", 1),
        ("page", 0),
        ("decode_step", 0),
        ("decode_step", 1),
    ]
    assert m["ranges"]["dsocr"]["repeat"] == 2 and m["ranges"]["dsocr"]["decode_step"] == 4

    # the analyzer read the stages back
    analysis = json.loads((run / "analysis.json").read_text())
    stages = {s["stage"]: s["instances"] for s in analysis["stages"]}
    assert {k: stages.get(k) for k in ("repeat", "page", "vision", "prefill", "decode", "decode_step")} == {
        "repeat": 2,
        "page": 2,
        "vision": 2,
        "prefill": 2,
        "decode": 2,
        "decode_step": 4,
    }

    # `dsocr export` re-exports the kept report with the nsys the manifest names
    (run / "trace.sqlite").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run), "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert [n for n, _ in _ranges(run / "trace.sqlite")] == names
