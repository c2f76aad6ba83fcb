"""Data-parallel captures (--gpus N / --devices): sharding, the barrier, the launcher, the driver's checks,
and a real 2-worker CPU capture under nsys (both workers' ranges in one trace, each with its category)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from dsocr.capture import barrier, launcher, progress, shards
from dsocr.capture import nsys as nsys_mod
from dsocr.capture.driver import CaptureSettings, check_machine, export_run
from dsocr.capture.pages import shipped_dir
from dsocr.capture.worker_config import WorkerConfig
from dsocr.cli import main
from dsocr.contract.errors import BadInput, BadUsage, EnvironmentProblem, ExitCode

REPO = Path(__file__).resolve().parents[1]


def test_shard_round_robin_keeps_capture_wide_indices() -> None:
    assert shards.shard("abcde", 2) == [((0, 2, 4), ("a", "c", "e")), ((1, 3), ("b", "d"))]
    assert shards.shard("ab", 2) == [((0,), ("a",)), ((1,), ("b",))]
    with pytest.raises(BadUsage, match="1 page\\(s\\) for 2 workers"):
        shards.shard("a", 2)


def test_device_lists() -> None:
    assert shards.parse_devices("0,1") == ("cuda:0", "cuda:1")
    assert shards.parse_devices("0,0") == ("cuda:0", "cuda:0")
    assert shards.parse_devices("cpu,cpu") == ("cpu", "cpu")
    for bad in ("0,cpu", "0,x", "0,,1"):
        with pytest.raises(BadUsage):
            shards.parse_devices(bad)
    assert shards.resolve_devices("cuda", 2, None) == ("cuda:0", ("cuda:0", "cuda:1"))
    assert shards.resolve_devices("cuda", 1, None) == ("cuda:0", ())
    assert shards.resolve_devices("cuda", None, "1") == ("cuda:1", ())
    assert shards.resolve_devices("cpu", None, None) == ("cpu", ())
    with pytest.raises(BadUsage):
        shards.resolve_devices("cuda", 2, "0,1")
    with pytest.raises(BadUsage):
        shards.resolve_devices("cpu", 2, None)
    assert shards.per_worker("timing.json", 3) == "timing-w3.json"


def test_fewer_gpus_than_asked_is_an_environment_problem() -> None:
    gpu = {"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1"}]}
    fake = ("python", "-c", "pass")
    two = CaptureSettings(device="cuda:0", devices=("cuda:0", "cuda:1"), worker_command=fake)
    with pytest.raises(EnvironmentProblem, match=r"this machine has 1 GPU\(s\).*--devices 0,0") as exc:
        check_machine(two, gpu)
    assert exc.value.exit_code == ExitCode.ENVIRONMENT == 5
    check_machine(CaptureSettings(device="cuda:0", devices=("cuda:0", "cuda:0"), worker_command=fake), gpu)
    entries = shards.device_entries(("cuda:0", "cuda:0"), gpu, [(0, 2), (1,)])
    assert entries[1] == {
        "rank": 1,
        "nvtx_category": 2,
        "device": "cuda:0",
        "pages": [1],
        "gpu": {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1"},
    }


def test_cli_more_gpus_than_the_machine_has_exits_5(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from dsocr.capture.manifest import gpu_environment

    have = len(gpu_environment().get("gpus") or [])
    with pytest.raises(SystemExit) as exc:
        main(["capture", "--gpus", str(have + 1), "--no-analyze", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exc.value.code == ExitCode.ENVIRONMENT, err
    assert err.count("\n") == 1 and err.startswith("dsocr: error: ")
    assert not (tmp_path / "r").exists()


def test_cli_bad_device_lists_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--devices", "0,x"], ["--gpus", "2", "--devices", "0,1"], ["--devices", "0,cpu"]):
        with pytest.raises(SystemExit) as exc:
            main(["capture", *argv, "--no-analyze", "--quiet"])
        err = capsys.readouterr().err
        assert exc.value.code == ExitCode.USAGE, err
        assert err.count("\n") == 1


def test_worker_config_rank_and_page_indices_round_trip(tmp_path: Path) -> None:
    cfg = WorkerConfig(pages=("a.png", "b.png"), timing_out="t.json", device="cpu", capture_range="none")
    cfg = WorkerConfig.from_dict({**cfg.to_dict(), "rank": 1, "workers": 2, "page_indices": [1, 3], "barrier": "b"})
    assert (cfg.page_index(0), cfg.page_index(1), cfg.rank) == (1, 3, 1)
    with pytest.raises(BadInput, match="page_indices"):
        WorkerConfig.from_dict({**cfg.to_dict(), "page_indices": [1]})
    with pytest.raises(BadInput, match="rank"):
        WorkerConfig.from_dict({**cfg.to_dict(), "rank": 2})


def _arrive_late(directory: str, rank: int, out: str) -> None:
    time.sleep(0.3 * rank)
    barrier.wait(Path(directory), "open", rank, 3, timeout_s=60)
    Path(out, f"passed.{rank}").write_text(str(time.monotonic()))


def test_barrier_lets_nobody_through_before_all_arrived(tmp_path: Path) -> None:
    procs = [
        multiprocessing.get_context("spawn").Process(target=_arrive_late, args=(str(tmp_path / "b"), k, str(tmp_path)))
        for k in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    arrived = {int(f.suffix[1:]): int(f.read_text()) for f in (tmp_path / "b").glob("open.*")}
    passed = {int(f.suffix[1:]): float(f.read_text()) for f in tmp_path.glob("passed.*")}
    assert sorted(arrived) == sorted(passed) == [0, 1, 2]
    with pytest.raises(Exception, match="only 1 of 2 workers"):
        barrier.wait(tmp_path / "c", "close", 0, 2, timeout_s=0.05)


FAKE_WORKER = """
import json, sys, time
cfg = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
def emit(**f): print("@dsocr " + json.dumps(f), flush=True)
emit(event="started", pid=0)
if cfg.get("fail"):
    emit(event="failed", kind="error", what="setup", message="boom"); sys.exit(6)
time.sleep(cfg.get("sleep", 0))
emit(event="page_done", repeat=0, page=cfg["page"])
emit(event="finished", timing="t")
"""


def _launch(tmp_path: Path, configs: list[dict[str, object]], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    paths = []
    for k, c in enumerate(configs):
        paths.append(tmp_path / f"w{k}.json")
        paths[-1].write_text(json.dumps(c))
    code = launcher.launch(paths, [sys.executable, "-c", FAKE_WORKER])
    return code, capfd.readouterr().out


def test_launcher_forwards_lines_and_finishes_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out = _launch(tmp_path, [{"page": 0}, {"page": 1}], capfd)
    events = [e for line in out.splitlines() if (e := progress.parse(line)) is not None]
    assert code == 0
    assert sorted(e.get("page") for e in events if e.event == progress.PAGE_DONE) == [0, 1]
    assert [e.event for e in events].count(progress.FINISHED) == 1 and events[-1].event == progress.FINISHED


def test_launcher_stops_the_others_when_one_fails(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out = _launch(tmp_path, [{"page": 0, "sleep": 120}, {"page": 1, "fail": True}], capfd)
    assert code == 6
    assert time.monotonic() - started < 100  # the sleeping worker was stopped, not waited for
    events = [e.event for line in out.splitlines() if (e := progress.parse(line)) is not None]
    assert progress.FAILED in events and progress.FINISHED not in events


def test_merge_timing(tmp_path: Path) -> None:
    for k, pages in enumerate(([0, 2], [1])):
        doc = {
            "config": {"pages": [f"p{i}" for i in pages], "rank": k, "page_indices": pages},
            "pages": [{"index": i} for i in pages],
            "records": [{"stage": "page", "page": i, "repeat": 0, "ms": 1.0} for i in pages],
            "setup": {"model_s": k},
            "interrupted": False,
        }
        (tmp_path / f"timing-w{k}.json").write_text(json.dumps(doc))
    shards.merge_timing([tmp_path / "timing-w0.json", tmp_path / "timing-w1.json"], tmp_path / "t.json", ("a", "b"))
    out = json.loads((tmp_path / "t.json").read_text())
    assert [p["index"] for p in out["pages"]] == [0, 1, 2]
    assert sorted(r["page"] for r in out["records"]) == [0, 1, 2]
    assert "rank" not in out["config"] and out["config"]["pages"] == ["p0", "p2", "p1"]
    assert [(w["rank"], w["device"], w["pages"]) for w in out["workers"]] == [(0, "a", [0, 2]), (1, "b", [1])]


def _nsys() -> Path | None:
    try:
        return nsys_mod.find(cwd=REPO).path
    except EnvironmentProblem:
        return None


NSYS = _nsys()
MISSING = [m for m in ("torch", "transformers", "nvtx") if importlib.util.find_spec(m) is None]


@pytest.mark.nsys
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.skipif(NSYS is None, reason="no nsys (run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME)")
@pytest.mark.skipif(bool(MISSING), reason=f"capture extra missing: {', '.join(MISSING)}")
def test_two_cpu_workers_under_one_nsys_session(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pages = [shipped_dir() / n for n in ("text-04-letter.png", "text-03-list.png", "image-02-photo.png")]
    argv = ["capture", "--devices", "cpu,cpu", "--mode", "tiny", "--repeats", "2", "--max-new-tokens", "3"]
    argv += ["--warmup", "1", "--shrink", "1,1,2,512,8", "--out", str(out), "--nsys", str(NSYS)]
    argv += ["--baseline-runs", "1", "--quiet", "--no-analyze"]
    for p in pages:
        argv += ["--pages", str(p)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0, "see the captured stderr"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["warnings"] == []
    assert [(w["rank"], w["pages"]) for w in manifest["devices"]["workers"]] == [(0, [0, 2]), (1, [1])]
    assert manifest["ranges"]["dsocr"]["repeat"] == 4 and manifest["ranges"]["dsocr"]["page"] == 6
    assert not (out / ".barrier").exists()
    with sqlite3.connect(out / "trace.sqlite") as con:
        rows = con.execute(
            "SELECT e.globalTid, e.category, s.value, e.int64Value, e.start, e.end FROM NVTX_EVENTS e "
            "JOIN StringIds s ON s.id = e.textId WHERE e.eventType = 59"
        ).fetchall()
    by_category: dict[int, set[int]] = {}
    for tid, cat, _, _, _, _ in rows:
        by_category.setdefault(cat, set()).add(tid >> 24)  # globalTid holds the pid in bits 24..47
    assert sorted(by_category) == [1, 2] and all(len(p) == 1 for p in by_category.values())
    assert by_category[1] != by_category[2]  # two processes, one category each
    pages_by_cat = {c: sorted(p for _, cc, n, p, _, _ in rows if cc == c and n == "page") for c in (1, 2)}
    assert pages_by_cat == {1: [0, 0, 2, 2], 2: [1, 1]}
    capture = [(s, e) for _, _, n, _, s, e in rows if n == "capture"]
    assert len(capture) == 2  # each worker's capture range, opened and closed together
    for name in ("timing.json", "timing-baseline.json"):
        timing = json.loads((out / name).read_text())
        assert [p["index"] for p in timing["pages"]] == [0, 1, 2]
        assert [w["pages"] for w in timing["workers"]] == [[0, 2], [1]]
    export_run(out, NSYS)  # `dsocr export` again: one 'repeat' range per worker and repeat expected, no warning
    assert json.loads((out / "manifest.json").read_text())["warnings"] == []
