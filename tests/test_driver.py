"""The capture driver with a fake nsys and a fake worker: run directory, manifest, failures."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dsocr.capture import driver, manifest, progress
from dsocr.capture.driver import CaptureSettings, run_capture
from dsocr.contract.errors import BadInput, BadUsage, EnvironmentProblem, ExitCode, RunFailed

SAMPLE_RUN = Path(__file__).parents[1] / "src" / "dsocr" / "data" / "sample" / "h100-gundam-2p2r"

FAKE_NSYS = f"""#!{sys.executable}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
log = os.environ.get("FAKE_NSYS_LOG")
if log:
    with open(log, "a") as f:
        register_only = os.environ.get("NSYS_NVTX_PROFILER_REGISTER_ONLY")
        f.write(json.dumps({{"argv": args, "register_only": register_only}}) + "\\n")
if args[0] == "--version":
    print("NVIDIA Nsight Systems version " + os.environ.get("FAKE_NSYS_VERSION", "2025.3.2.474-253236389321v0"))
    sys.exit(0)
if args[0] == "profile":
    if os.environ.get("FAKE_NSYS_PROFILE_FAIL"):
        print("Unable to retrieve the importer version", flush=True)
        sys.exit(1)
    i, out = 1, None
    while i < len(args):
        if args[i] == "-o":
            out, i = args[i + 1], i + 2
        elif args[i].startswith("--"):
            i += 1
        else:
            break
    rc = subprocess.call(args[i:])
    name = out + (".qdstrm" if os.environ.get("FAKE_NSYS_NO_REP") else ".nsys-rep")
    open(name, "wb").write(b"fake report")
    sys.exit(rc)
if args[0] == "export":
    if os.environ.get("FAKE_NSYS_EXPORT_FAIL"):
        print("Error: the report is corrupt", file=sys.stderr)
        sys.exit(1)
    shutil.copy(os.environ["FAKE_NSYS_SQLITE"], args[args.index("-o") + 1])
    sys.exit(0)
sys.exit(2)
"""

FAKE_WORKER = """
import json, os, sys
cfg = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
def emit(event, **fields):
    print("@dsocr " + json.dumps({"event": event, **fields}), flush=True)
baseline = cfg["capture_range"] == "none"
if os.environ.get("FAKE_WORKER_LOG"):
    with open(os.environ["FAKE_WORKER_LOG"], "a") as f:
        f.write(json.dumps({"timing_out": os.path.basename(cfg["timing_out"]), "range": cfg["capture_range"]}) + "\\n")
emit("started", pid=os.getpid())
emit("inputs_ready", pages=len(cfg["pages"]), repeats=cfg["repeats"])
print("some ordinary output", flush=True)
if os.environ.get("FAKE_WORKER_OOM"):
    emit("failed", kind="oom", what="repeat 0 page 1 prefill (gundam, 3x2 crops)", message="CUDA out of memory.")
    sys.exit(6)
if os.environ.get("FAKE_WORKER_QUIT"):
    sys.exit(0)
crash = os.environ.get("FAKE_WORKER_CRASH")
if crash and (crash == "all" or (baseline and crash in ("baseline", os.path.basename(cfg["timing_out"])))):
    print("Traceback (most recent call last):", flush=True)
    print("RuntimeError: boom", flush=True)
    sys.exit(1)
emit("capture_start", capture_warmup=cfg["capture_warmup"])
for r in range(cfg["capture_warmup"]):
    for p in range(len(cfg["pages"])):
        emit("page_done", warmup=r, page=p)
if cfg["capture_warmup"]:
    emit("capture_warmup_done", rounds=cfg["capture_warmup"], seconds=0.5)
for r in range(cfg["repeats"]):
    for p in range(len(cfg["pages"])):
        emit("page_done", repeat=r, page=p)
emit("capture_end")
json.dump({"fake": True, "capture_range": cfg["capture_range"]}, open(cfg["timing_out"], "w"))
emit("finished", timing=cfg["timing_out"])
"""


@pytest.fixture
def fake(tmp_path: Path, cpu_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    nsys = tmp_path / "bin" / "nsys"
    nsys.parent.mkdir()
    nsys.write_text(FAKE_NSYS)
    nsys.chmod(0o755)
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    pages = tmp_path / "pages"
    pages.mkdir()
    Image.new("RGB", (64, 90), (200, 10, 10)).save(pages / "p1.png")
    Image.new("RGB", (90, 64), (10, 200, 10)).save(pages / "p2.png")
    log = tmp_path / "nsys-calls.jsonl"
    monkeypatch.setenv("FAKE_NSYS_SQLITE", str(cpu_sqlite))  # 2 repeats x 2 pages of dsocr ranges
    monkeypatch.setenv("FAKE_NSYS_LOG", str(log))
    return {"nsys": nsys, "worker": worker, "pages": pages, "log": log, "out": tmp_path / "run"}


def _settings(fake: dict[str, Path], **kw: Any) -> CaptureSettings:
    base: dict[str, Any] = {
        "repeats": 2,
        "pages": (fake["pages"],),
        "mode": "tiny",
        "device": "cpu",
        "nsys": fake["nsys"],
        "out": fake["out"],
        "worker_command": (sys.executable, str(fake["worker"])),
    }
    return CaptureSettings(**(base | kw))


class Recorder(driver.NullReporter):
    def __init__(self, interrupt_after: int | None = None) -> None:
        self.events: list[str] = []
        self.phases: list[tuple[str, int | None]] = []
        self.interrupt_after = interrupt_after

    def phase(self, name: str, description: str, total: int | None) -> None:
        self.phases.append((name, total))

    def step(self, event: progress.ProgressEvent) -> None:
        self.events.append(event.event)
        if self.interrupt_after is not None and self.events.count(progress.PAGE_DONE) >= self.interrupt_after:
            raise KeyboardInterrupt


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def test_complete_cpu_capture(fake: dict[str, Path]) -> None:
    analyzed: list[Path] = []
    rec = Recorder()
    result = run_capture(_settings(fake, seed=7), rec, analyze=analyzed.append, command=["dsocr", "capture"])
    run = fake["out"]
    assert result.run_dir == run and analyzed == [run]
    assert result.warnings == ()
    for name in ("manifest.json", "timing.json", "timing-baseline.json", "trace.nsys-rep", "trace.sqlite"):
        assert (run / name).is_file(), name
    assert json.loads((run / "timing.json").read_text())["capture_range"] == "nvtx"
    assert json.loads((run / "timing-baseline.json").read_text())["capture_range"] == "none"
    assert rec.phases == [
        ("prepare", None),
        ("baseline", 4),
        ("profile", 4),
        ("export", None),
        ("baseline", 4),
        ("analyze", None),
    ]
    # 3 worker runs (baseline, profiled, baseline), each 1 capture warm-up pass + 2 repeats over 2 pages
    assert rec.events.count(progress.PAGE_DONE) == 3 * (1 + 2) * 2
    assert rec.events.count(progress.CAPTURE_WARMUP_DONE) == 3
    m = _manifest(run)
    assert (m["status"], m["failure"], m["analysis"], m["seed"], m["command"]) == (
        "complete",
        None,
        "done",
        7,
        ["dsocr", "capture"],
    )
    assert m["settings"]["repeats"] == 2 and m["settings"]["mode"] == "tiny" and m["settings"]["device"] == "cpu"
    assert (m["settings"]["warmup"], m["settings"]["capture_warmup"]) == (2, 1)
    # a tiny-mode run of 2 given pages, 2 repeats: no named workload, and the manifest says how it differs
    assert m["workload"]["name"] is None and m["workload"]["closest"] == "dsocr-quick-v1"
    assert "pages" in m["workload"]["differs"] and "mode" in m["workload"]["differs"]
    assert m["nsys"] == {"path": str(fake["nsys"]), "version": "2025.3.2.474", "found_via": "--nsys"}
    assert [i["name"] for i in m["inputs"]] == ["p1.png", "p2.png"] and len(m["inputs"][0]["sha256"]) == 64
    assert m["ranges"]["dsocr"]["repeat"] == 2 and m["ranges"]["dsocr"]["page"] == 4
    assert m["environment"]["packages"]["dsocr"] and m["environment"]["python"]
    assert set(m["phases"]) == {"profile", "export", "baseline", "analyze"}
    assert "trace.sqlite" in m["files"] and "timing-baseline.json" in m["files"]
    # the keys in the order every capture wrote them (the bundled sample's manifest), also at the run level
    sample = json.loads((SAMPLE_RUN / "manifest.json").read_text())
    assert list(m) == list(sample) and list(m["timing"]["runs"][0]) == list(sample["timing"]["runs"][0])
    # settings added since the sample was captured (e.g. ``profile``) may stand among them, the sample's in order
    assert [k for k in m["settings"] if k in sample["settings"]] == list(sample["settings"])
    assert list(m["inputs"][0]) == list(sample["inputs"][0])
    calls = [json.loads(line) for line in fake["log"].read_text().splitlines()]
    profile = next(c for c in calls if c["argv"][0] == "profile")
    assert "--nvtx-capture=capture@dsocr" in profile["argv"] and profile["register_only"] == "0"
    assert "@dsocr" in (run / "capture.log").read_text()


def test_run_dir_name_and_no_baseline(fake: dict[str, Path], tmp_path: Path) -> None:
    settings = _settings(fake, out=None, runs_dir=tmp_path / "runs", baseline=False, analyze=False)
    result = run_capture(settings, analyze=lambda p: pytest.fail("analyze must not run"))
    assert result.run_dir.parent == tmp_path / "runs"
    assert result.run_dir.name.endswith("-cpu-tiny")
    assert not (result.run_dir / "timing-baseline.json").exists()
    assert _manifest(result.run_dir)["analysis"] == "skipped"
    again = run_capture(settings)
    assert again.run_dir != result.run_dir


def test_gpu_slug() -> None:
    assert driver.gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert driver.gpu_slug("NVIDIA GeForce RTX 5090") == "geforce-rtx-5090"
    assert driver.gpu_slug(None) == "cpu"


def test_bad_page_stops_before_anything(fake: dict[str, Path]) -> None:
    (fake["pages"] / "broken.png").write_bytes(b"")
    with pytest.raises(BadInput) as exc:
        run_capture(_settings(fake))
    assert (
        exc.value.message
        == f"{fake['pages'] / 'broken.png'}: the file is empty; pass a PNG, JPEG, TIFF, WebP or PDF file"
    )
    assert not fake["out"].exists() and not fake["log"].exists()


def test_out_already_holds_a_capture(fake: dict[str, Path]) -> None:
    run_capture(_settings(fake, baseline=False))
    with pytest.raises(BadUsage) as exc:
        run_capture(_settings(fake))
    assert exc.value.message == f"--out {fake['out']}: already holds a capture; choose another --out or remove it"


def test_no_gpu(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "gpu_environment", lambda: {"gpus": [], "error": "NVML: Driver Not Loaded"})
    with pytest.raises(EnvironmentProblem) as exc:
        run_capture(_settings(fake, device="cuda"))
    assert exc.value.exit_code == ExitCode.ENVIRONMENT
    assert exc.value.message == (
        "no NVIDIA GPU found (NVML: Driver Not Loaded); run on a machine with a GPU and its driver, or pass "
        "--device cpu to run the whole pipeline on the CPU under nsys (NVTX ranges, no kernels)"
    )
    assert not fake["out"].exists()


def test_nsys_too_old_for_cuda_13(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = {"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}], "driver_cuda": "13.0", "error": None}
    monkeypatch.setattr(manifest, "gpu_environment", lambda: gpu)
    monkeypatch.setattr(manifest, "torch_cuda_version", lambda: "13.0")
    monkeypatch.setenv("FAKE_NSYS_VERSION", "2023.4.4.54-234433681190v0")
    with pytest.raises(EnvironmentProblem) as exc:
        run_capture(_settings(fake, device="cuda"))
    assert exc.value.message.startswith(
        f"nsys 2023.4.4 at {fake['nsys']} (via --nsys) is too old for CUDA 13.0 programs (torch's CUDA): "
        "it loses their kernel records; nsys >= 2025.3 is needed: "
    )


def test_nsys_missing(fake: dict[str, Path]) -> None:
    with pytest.raises(EnvironmentProblem) as exc:
        run_capture(_settings(fake, nsys=fake["nsys"].parent / "nope"))
    assert exc.value.message.startswith(f"{fake['nsys'].parent / 'nope'} (from --nsys): no such nsys executable; ")


def test_worker_out_of_memory(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WORKER_OOM", "1")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake, baseline_runs=1))
    assert exc.value.exit_code == ExitCode.RUN_FAILED
    assert exc.value.message == (
        "the profiled worker (under nsys): CUDA out of memory while running repeat 0 page 1 prefill "
        "(gundam, 3x2 crops); use a smaller --mode, fewer --max-new-tokens or a GPU with more free memory "
        f"(details in {fake['out'] / 'capture.log'})"
    )
    m = _manifest(fake["out"])
    assert m["status"] == "failed" and m["failure"]["phase"] == "profile"
    assert m["failure"]["message"] == exc.value.message


def test_worker_crash_in_baseline(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WORKER_CRASH", "baseline")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake, baseline_runs=1))
    assert exc.value.message == (
        f"the unprofiled baseline worker exited with code 1 (RuntimeError: boom); see {fake['out'] / 'baseline.log'}"
    )
    m = _manifest(fake["out"])
    assert (m["status"], m["failure"]["phase"]) == ("failed", "baseline")
    assert (fake["out"] / "trace.sqlite").exists()  # the capture itself is kept


def test_importer_missing(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NSYS_NO_REP", "1")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake))
    assert exc.value.message.startswith(
        f"nsys left trace.qdstrm but no trace.nsys-rep in {fake['out']}: its QdstrmImporter could not run"
    )


def test_export_failure_keeps_report_and_dsocr_export_retries(
    fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NSYS_EXPORT_FAIL", "1")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake, baseline=False))
    run = fake["out"]
    assert exc.value.message == (
        f"nsys export of {run / 'trace.nsys-rep'} failed (exit code 1: Error: the report is corrupt); the report "
        f"is kept: retry with `dsocr export {run}`, or open it in the Nsight Systems GUI"
    )
    assert (run / "trace.nsys-rep").exists() and not (run / "trace.sqlite").exists()
    assert not [p for p in run.iterdir() if "part" in p.name]
    m = _manifest(run)
    assert (m["status"], m["failure"]["phase"]) == ("failed", "export")
    monkeypatch.delenv("FAKE_NSYS_EXPORT_FAIL")
    sqlite = driver.export_run(run)
    assert sqlite == run / "trace.sqlite" and sqlite.exists()
    m = _manifest(run)
    assert (m["status"], m["failure"], m["ranges"]["dsocr"]["page"]) == ("complete", None, 4)


def test_missing_ranges_names_both_versions(
    fake: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.sqlite"
    with sqlite3.connect(empty) as con:
        con.execute("CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT)")
        con.execute("CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, textId INT, domainId INT)")
        con.execute("INSERT INTO NVTX_EVENTS VALUES (1, NULL, 75, 'dsocr', NULL, 1)")
        con.execute("INSERT INTO NVTX_EVENTS VALUES (2, NULL, 76, NULL, NULL, 1)")
    monkeypatch.setenv("FAKE_NSYS_SQLITE", str(empty))
    monkeypatch.setenv("FAKE_NSYS_VERSION", "2023.4.4.54-234433681190v0")
    real = manifest.package_version
    monkeypatch.setattr(manifest, "package_version", lambda n: "0.2.14" if n == "nvtx" else real(n))
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake))
    assert exc.value.message == (
        f"{fake['out'] / 'trace.sqlite'}: the trace holds no 'dsocr' NVTX ranges: nsys 2023.4.4 (<= 2024.2) "
        "silently drops the ranges of the nvtx package 0.2.14 (>= 0.2.12); "
        '`pip install "nvtx>=0.2.10,<0.2.12"` (recorded by every nsys tried) or use nsys >= 2025.3'
    )
    assert _manifest(fake["out"])["failure"]["phase"] == "export"


def test_capture_keeps_a_first_export_without_ranges(
    fake: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rangeless = tmp_path / "rangeless.sqlite"
    with sqlite3.connect(rangeless) as con:
        con.execute("CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, domainId INT)")
        con.execute("INSERT INTO NVTX_EVENTS VALUES (1, 2, 59, 'other', 0)")
    monkeypatch.setenv("FAKE_NSYS_SQLITE", str(rangeless))
    with pytest.raises(RunFailed, match="holds no 'dsocr' NVTX ranges"):
        run_capture(_settings(fake, baseline=False))
    # nothing to lose on a first export: it is kept to look at, and no part file is left
    assert (fake["out"] / "trace.sqlite").read_bytes() == rangeless.read_bytes()
    assert not [p for p in fake["out"].iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("broken", ["rangeless", "garbage"])
def test_reexport_that_fails_its_check_keeps_trace_and_manifest(
    fake: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    run_capture(_settings(fake, baseline=False))
    run = fake["out"]
    trace, manifest_before = (run / "trace.sqlite").read_bytes(), (run / "manifest.json").read_bytes()
    bad = tmp_path / f"{broken}.sqlite"
    if broken == "garbage":
        bad.write_bytes(b"not an SQLite file" * 100)
    else:
        with sqlite3.connect(bad) as con:
            con.execute("CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, domainId INT)")
    monkeypatch.setenv("FAKE_NSYS_SQLITE", str(bad))
    with pytest.raises(RunFailed) as exc:
        driver.export_run(run)
    assert exc.value.message.endswith("; trace.sqlite and manifest.json were left as they were")
    assert (run / "trace.sqlite").read_bytes() == trace
    assert (run / "manifest.json").read_bytes() == manifest_before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_reexport_replaces_trace_and_counts_together(
    fake: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_capture(_settings(fake, baseline=False))
    run = fake["out"]
    fewer = tmp_path / "fewer.sqlite"
    fewer.write_bytes(Path(os.environ["FAKE_NSYS_SQLITE"]).read_bytes())
    with sqlite3.connect(fewer) as con:  # one repeat's ranges less than the capture's export
        last = con.execute("SELECT max(start) FROM NVTX_EVENTS WHERE eventType = 59").fetchone()[0]
        con.execute("DELETE FROM NVTX_EVENTS WHERE eventType IN (59, 60) AND start = ?", (last,))
    before = _manifest(run)["ranges"]["dsocr"]
    monkeypatch.setenv("FAKE_NSYS_SQLITE", str(fewer))
    driver.export_run(run)
    assert (run / "trace.sqlite").read_bytes() == fewer.read_bytes()
    after = _manifest(run)["ranges"]["dsocr"]
    assert sum(after.values()) == sum(before.values()) - 1
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_fewer_ranges_than_expected_is_a_warning(fake: dict[str, Path]) -> None:
    result = run_capture(_settings(fake, repeats=3, baseline=False))
    cut = "(3 repeats x 2 pages): the capture range may have cut the run"
    assert result.warnings == (
        f"trace.sqlite holds 2 'repeat' ranges, expected 3 {cut}",
        f"trace.sqlite holds 4 'page' ranges, expected 6 {cut}",
    )
    assert _manifest(fake["out"])["warnings"] == list(result.warnings)


def test_ctrl_c_leaves_an_interrupted_manifest(fake: dict[str, Path]) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_capture(_settings(fake, baseline_runs=1), Recorder(interrupt_after=1))
    m = _manifest(fake["out"])
    assert (m["status"], m["failure"], m["phase"]) == (
        "interrupted",
        {"phase": "profile", "message": "Ctrl-C"},
        "profile",
    )
    assert m["finished"] is not None
    assert not [p for p in fake["out"].iterdir() if p.name.startswith(".")]


def test_ctrl_c_in_the_baseline_before(fake: dict[str, Path]) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_capture(_settings(fake, baseline_runs=2), Recorder(interrupt_after=1))
    m = _manifest(fake["out"])
    assert (m["status"], m["failure"]) == ("interrupted", {"phase": "baseline", "message": "Ctrl-C"})
    runs = m["timing"]["runs"]
    assert runs[0]["started"] is not None and runs[0]["finished"] is None and runs[1]["started"] is None


def test_export_run_on_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        driver.export_run(tmp_path / "gone")
    assert exc.value.message == f"{tmp_path / 'gone'}: no such run directory; pass a directory made by `dsocr capture`"


@pytest.mark.parametrize("capture_warmup", [3, 0])
def test_worker_config_for_each_pass(fake: dict[str, Path], capture_warmup: int) -> None:
    run_capture(_settings(fake, max_new_tokens=5, op_ranges=True, seed=3, capture_warmup=capture_warmup))
    prof = json.loads((fake["out"] / "worker-config.json").read_text())
    base = json.loads((fake["out"] / "worker-config-baseline.json").read_text())
    assert prof["capture_range"] == "nvtx" and base["capture_range"] == "none"
    assert prof["timing_out"].endswith("timing.json") and base["timing_out"].endswith("timing-baseline.json")
    assert {k: v for k, v in prof.items() if k not in ("capture_range", "timing_out")} == {
        k: v for k, v in base.items() if k not in ("capture_range", "timing_out")
    }
    assert (prof["max_new_tokens"], prof["op_ranges"], prof["seed"], prof["mode"]) == (5, True, 3, "tiny")
    # the profiled run and the baselines run the same capture warm-up
    assert (prof["warmup"], prof["capture_warmup"], base["capture_warmup"]) == (2, capture_warmup, capture_warmup)
    assert _manifest(fake["out"])["settings"]["capture_warmup"] == capture_warmup
    assert prof["pages"] == [str(fake["pages"] / "p1.png"), str(fake["pages"] / "p2.png")]


def test_settings_json_is_plain(fake: dict[str, Path]) -> None:
    data = _settings(fake).to_json()
    json.dumps(data)
    assert "worker_command" not in data and data["pages"] == [str(fake["pages"])]


def test_worker_that_never_finishes(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WORKER_QUIT", "1")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake, baseline_runs=1))
    assert exc.value.message == (
        "the profiled worker (under nsys) ended without finishing (last event: inputs_ready; "
        f"last line: some ordinary output); see {fake['out'] / 'capture.log'}"
    )


def test_analysis_failure_is_recorded(fake: dict[str, Path]) -> None:
    def broken(run: Path) -> None:
        raise EnvironmentProblem(f"{run}: the analyzer cannot run here")

    with pytest.raises(EnvironmentProblem):
        run_capture(_settings(fake, baseline=False), analyze=broken)
    m = _manifest(fake["out"])
    assert m["status"] == "complete"
    assert m["analysis"] == f"failed: {fake['out']}: the analyzer cannot run here"


def test_bad_worker_settings_stop_before_the_run_directory(fake: dict[str, Path]) -> None:
    with pytest.raises(BadInput) as exc:
        run_capture(_settings(fake, trust_remote_code=True))
    assert exc.value.message == (
        "--trust-remote-code runs a checkpoint's own code: pass its directory or hub id as --model, not 'replica'"
    )
    with pytest.raises(BadInput) as exc:
        run_capture(_settings(fake, dtype="int3"))
    assert exc.value.message.startswith("worker config dtype 'int3' is unknown: use one of auto, bfloat16")
    assert not fake["out"].exists()


def test_nsys_profile_fails_before_the_worker(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NSYS_PROFILE_FAIL", "1")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake))
    assert exc.value.message == (
        "nsys profile exited with code 1 before the worker started (Unable to retrieve the importer version); "
        f"see {fake['out'] / 'capture.log'}"
    )


def _order(fake: dict[str, Path]) -> list[tuple[str, str]]:
    lines = (fake["out"].parent / "workers.jsonl").read_text().splitlines()
    return [(d["timing_out"], d["range"]) for d in map(json.loads, lines)]


@pytest.mark.parametrize(
    ("runs", "order"),
    [
        (0, ["timing.json"]),
        (1, ["timing.json", "timing-baseline.json"]),
        (2, ["timing-baseline-1.json", "timing.json", "timing-baseline.json"]),
        (3, ["timing-baseline-1.json", "timing.json", "timing-baseline.json", "timing-baseline-3.json"]),
        (
            4,
            [
                "timing-baseline-1.json",
                "timing-baseline-2.json",
                "timing.json",
                "timing-baseline.json",
                "timing-baseline-4.json",
            ],
        ),
    ],
)
def test_baseline_runs_before_and_after_the_profiled_run(
    fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch, runs: int, order: list[str]
) -> None:
    monkeypatch.setenv("FAKE_WORKER_LOG", str(fake["out"].parent / "workers.jsonl"))
    rec = Recorder()
    run_capture(_settings(fake, baseline_runs=runs, analyze=False), rec)
    # the workers ran in this order, the profiled one alone under nsys (capture range nvtx on the CPU)
    assert _order(fake) == [(name, "nvtx" if name == "timing.json" else "none") for name in order]
    assert [p for p, _ in rec.phases if p in ("baseline", "profile")] == [
        "profile" if name == "timing.json" else "baseline" for name in order
    ]
    for name in order:
        assert (fake["out"] / name).is_file(), name
    m = _manifest(fake["out"])
    timing = m["timing"]
    assert timing["baseline"] == ("timing-baseline.json" if runs else None)
    assert timing["baseline_runs"] == runs
    assert [r["file"] for r in timing["runs"]] == order
    positions = [r["position"] for r in timing["runs"]]
    at = order.index("timing.json")
    assert positions == ["before"] * at + ["profiled"] + ["after"] * (len(order) - at - 1)
    assert all(r["started"] and r["finished"] and r["seconds"] >= 0 for r in timing["runs"])
    starts = [r["started"] for r in timing["runs"]]
    assert starts == sorted(starts)  # ISO 8601 UTC strings sort in time order
    assert [r["k"] for r in timing["runs"] if r["role"] == "baseline"] == list(range(1, runs + 1))
    # each unprofiled run has its own worker config naming its own timing file
    for r in timing["runs"]:
        if r["role"] == "baseline":
            config = (
                "worker-config-baseline.json"
                if r["file"] == "timing-baseline.json"
                else (f"worker-config-baseline-{r['k']}.json")
            )
            cfg = json.loads((fake["out"] / config).read_text())
            assert (Path(cfg["timing_out"]).name, cfg["capture_range"]) == (r["file"], "none")
    assert ("baseline" in m["phases"]) == (runs > 0)
    assert m["settings"]["baseline_runs"] == runs


def test_no_baseline_wins_over_baseline_runs(fake: dict[str, Path]) -> None:
    run_capture(_settings(fake, baseline=False, baseline_runs=3, analyze=False))
    m = _manifest(fake["out"])
    assert m["timing"]["baseline_runs"] == 0 and [r["file"] for r in m["timing"]["runs"]] == ["timing.json"]
    assert not list(fake["out"].glob("timing-baseline*")) and not list(fake["out"].glob("worker-config-baseline*"))


def test_worker_crash_in_the_baseline_before(fake: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WORKER_CRASH", "timing-baseline-1.json")
    with pytest.raises(RunFailed) as exc:
        run_capture(_settings(fake, baseline_runs=2))
    assert exc.value.message == (
        "the unprofiled baseline worker (1 of 2, before the profiled run) exited with code 1 (RuntimeError: boom); "
        f"see {fake['out'] / 'baseline.log'}"
    )
    m = _manifest(fake["out"])
    assert (m["status"], m["failure"]["phase"]) == ("failed", "baseline")
    assert not (fake["out"] / "trace.nsys-rep").exists()  # the profiled run never started
    assert m["timing"]["runs"][1]["started"] is None


def test_negative_capture_warmup(fake: dict[str, Path]) -> None:
    with pytest.raises(BadUsage) as exc:
        run_capture(_settings(fake, capture_warmup=-1))
    assert exc.value.message == "--capture-warmup is -1: it must be 0 or more"
    assert not fake["out"].exists()


def test_negative_baseline_runs(fake: dict[str, Path]) -> None:
    with pytest.raises(BadUsage) as exc:
        run_capture(_settings(fake, baseline_runs=-1))
    assert exc.value.message == "--baseline-runs is -1: it must be 0 or more (0: no unprofiled run)"
    assert not fake["out"].exists()
