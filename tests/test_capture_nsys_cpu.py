"""Real `dsocr capture --device cpu` runs under nsys: shrunk replica, tiny mode, 1 page, 2 repeats, 3 tokens.

The whole pipeline (inputs, nsys profile of the worker, export, range check, manifest, analyze) but the
baseline pass, to stay near a minute on two cores: one capture with a 2-pass capture warm-up and module
ranges (the warm-up's work is seen through them), one with `--capture-warmup 0` to compare the analyzer's
stages (and `--op-memory`: the profiled worker makes op_memory.json after its capture range).

Needs an nsys (Debian's 2023.4 from `bash scripts/install-nsys.sh`, found through DSOCR_NSYS_HOME
or ./.tools/nsys) and the capture extra (torch, transformers, nvtx); skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections import Counter
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


def _ranges(sqlite: Path) -> list[tuple[str, str, int, int, int | None]]:
    """Every push/pop range of the export in start order: (domain, name, start, end, int64 payload)."""
    text = "coalesce(e.text, s.value)"
    with sqlite3.connect(sqlite) as con:
        domains = dict(
            con.execute(
                f"SELECT e.domainId, {text} FROM NVTX_EVENTS e LEFT JOIN StringIds s ON s.id = e.textId"
                " WHERE e.eventType = 75"
            ).fetchall()
        )
        rows = con.execute(
            f"SELECT e.domainId, {text}, e.start, e.end, e.int64Value FROM NVTX_EVENTS e"
            " LEFT JOIN StringIds s ON s.id = e.textId WHERE e.eventType = 59 ORDER BY e.start"
        ).fetchall()
    return [(domains.get(d, ""), n, start, end, p) for d, n, start, end, p in rows]


def _dsocr(sqlite: Path) -> list[tuple[str, int | None]]:
    return [(n, p) for d, n, _, _, p in _ranges(sqlite) if d == "dsocr"]


def _capture(out: Path, *extra: str) -> Path:
    page = shipped_dir() / "text-04-letter.png"
    argv = ["capture", "--device", "cpu", "--mode", "tiny", "--repeats", "2", "--max-new-tokens", "3"]
    argv += ["--warmup", "1", "--shrink", "1,1,2,512,8", "--pages", str(page), "--out", str(out), "--nsys", str(NSYS)]
    argv += ["--no-baseline", "--quiet", *extra]  # the baseline pass is the same worker again (test_driver.py)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, "see the captured stderr"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Capture-warm-up passes -> run directory: 2 (with module ranges) and 0."""
    tmp = tmp_path_factory.mktemp("cpu-capture")
    return {
        2: _capture(tmp / "warm", "--capture-warmup", "2", "--module-ranges"),
        0: _capture(tmp / "cold", "--capture-warmup", "0", "--op-memory"),
    }


PER_PAGE = ["page", "vision", "sam", "clip", "projector", "prefill", "decode", "decode_step", "decode_step"]
STAGES = {"repeat": 2, "page": 2, "vision": 2, "sam": 2, "clip": 2, "projector": 2, "prefill": 2, "decode": 2}


def test_cpu_capture_end_to_end(runs: dict[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run = runs[2]
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["analysis"] == "done", m.get("failure")
    for name in ("trace.nsys-rep", "trace.sqlite", "timing.json", "analysis.json", "report.md"):
        assert (run / name).is_file(), name
    assert (m["settings"]["warmup"], m["settings"]["capture_warmup"]) == (1, 2)

    # the export holds the contract's ranges in order: the warm-up rounds outside the capture range, the
    # capture warm-up inside it, before the first repeat, with no stage range in it
    names = [n for n, _ in _dsocr(run / "trace.sqlite")]
    assert names == ["capture", "warmup", "repeat", *PER_PAGE, "repeat", *PER_PAGE]
    payloads = [(n, p) for n, p in _dsocr(run / "trace.sqlite") if n in ("repeat", "page", "decode_step")]
    assert payloads == [("repeat", 0), ("page", 0), ("decode_step", 0), ("decode_step", 1)] * 1 + [
        ("repeat", 1),
        ("page", 0),
        ("decode_step", 0),
        ("decode_step", 1),
    ]
    assert m["ranges"]["dsocr"]["repeat"] == 2 and m["ranges"]["dsocr"]["decode_step"] == 4
    assert m["ranges"]["dsocr"]["warmup"] == 1

    # the capture warm-up holds exactly 2 passes' work: the module ranges of vision, prefill and decode,
    # 2x those of one repeat (and nothing of the dsocr domain)
    ranges = _ranges(run / "trace.sqlite")
    top = {n: (start, end) for d, n, start, end, _ in ranges if d == "dsocr" and n in ("capture", "warmup")}
    reps = [(start, end) for d, n, start, end, _ in ranges if d == "dsocr" and n == "repeat"]
    (c0, c1), (w0, w1) = top["capture"], top["warmup"]
    assert c0 <= w0 < w1 <= reps[0][0] < reps[1][1] <= c1

    def modules(lo: int, hi: int) -> Counter[str]:
        return Counter(n for d, n, start, end, _ in ranges if d == "dsocr.module" and lo <= start and end <= hi)

    per_repeat = [modules(*r) for r in reps]
    assert per_repeat[0] == per_repeat[1] and per_repeat[0]["lm_head"] == 3  # 1 prefill + 2 decode steps
    assert per_repeat[0]["vision.sam.patch_embed"] == 1
    assert modules(w0, w1) == Counter({k: 2 * v for k, v in per_repeat[0].items()})
    assert not [n for d, n, start, _, _ in ranges if d == "dsocr" and w0 < start < w1]

    # timing.json: the repeats' records, the capture warm-up in setup
    timing = json.loads((run / "timing.json").read_text())
    assert {r["repeat"] for r in timing["records"]} == {0, 1} and len(timing["records"]) == 2 * 10
    assert timing["setup"]["capture_warmup_rounds"] == 2 and timing["setup"]["capture_warmup_s"] > 0

    # the analyzer read the stages back (the warm-up is none of them)
    analysis = json.loads((run / "analysis.json").read_text())
    stages = {s["stage"]: s["instances"] for s in analysis["stages"]}
    assert stages == {**STAGES, "decode_step": 4}

    # `dsocr export` re-exports the kept report with the nsys the manifest names
    (run / "trace.sqlite").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run), "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert [n for n, _ in _dsocr(run / "trace.sqlite")] == names


def test_capture_warmup_0_and_the_analyzer(runs: dict[int, Path]) -> None:
    """Without the capture warm-up the trace has no warmup range; the analyzer's stages are the same either way."""
    cold, warm = runs[0], runs[2]
    names = [n for n, _ in _dsocr(cold / "trace.sqlite")]
    assert names == ["capture", "repeat", *PER_PAGE, "repeat", *PER_PAGE]
    assert json.loads((cold / "timing.json").read_text())["setup"]["capture_warmup_rounds"] == 0
    a0, a2 = (json.loads((r / "analysis.json").read_text()) for r in (cold, warm))
    assert {s["stage"]: s["instances"] for s in a0["stages"]} == {s["stage"]: s["instances"] for s in a2["stages"]}
    assert a0["repeats"]["passes"] == a2["repeats"]["passes"] == 2
    per_pass = [sorted((r["stage"], r["pass"], r["instances"]) for r in a["repeats"]["per_pass"]) for a in (a0, a2)]
    assert per_pass[0] == per_pass[1]


def test_op_memory_end_to_end(runs: dict[int, Path]) -> None:
    """`--op-memory` without a baseline: the profiled worker's extra pass, outside the trace, in every report."""
    cold = runs[0]
    m = json.loads((cold / "manifest.json").read_text())
    assert m["settings"]["op_memory"] is True
    assert m["op_memory"] == {"file": "op_memory.json", "run": "timing.json"}
    assert json.loads((runs[2] / "manifest.json").read_text())["op_memory"] is None
    assert not (runs[2] / "op_memory.json").exists()
    doc = json.loads((cold / "op_memory.json").read_text())
    assert doc["schema"] == "dsocr.op_memory" and doc["device"] == "cpu"
    by_stage = {s["stage"]: s for s in doc["stages"]}
    assert by_stage["prefill"]["allocated_bytes"] > 0 and by_stage["prefill"]["operators"]
    # the pass ran after the capture range: the trace holds the two repeats only (test_capture_warmup_0...)
    assert m["ranges"]["dsocr"]["prefill"] == 2
    analysis = json.loads((cold / "analysis.json").read_text())
    assert {s["stage"] for s in analysis["op_memory"]["stages"]} == set(by_stage)
    assert "## Operator memory (allocator)" in (cold / "report.md").read_text()
    assert "operator memory" not in (cold / "report.md").read_text().split("## ")[0]  # no how-to fact
    assert "**operator memory**: not captured" in (runs[2] / "report.md").read_text()
    with sqlite3.connect(cold / "results.sqlite") as con:
        assert con.execute("SELECT count(*) FROM op_memory_stages").fetchone() == (len(by_stage),)
