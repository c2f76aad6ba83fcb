"""A corpus of bad inputs and hostile output places, built by the tests themselves (docs/reliability.md).

Each :class:`Case` builds what it needs in a fresh directory (small traces from :mod:`tracebuild`,
FIFOs, locked directories, re-saved copies, broken ``.xz`` files, corrupt run files, a fake nsys)
and says how ``dsocr`` must end: the exit code and the one line it prints. ``fsize`` runs the
command under a file-size limit (RLIMIT_FSIZE): every write past it fails as on a full disk.
``interrupt`` sends that signal once the named file exists (a command caught mid-write).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from dsocr.contract.errors import ExitCode
from tracebuild import TraceBuilder


@attrs.frozen
class Setup:
    """A built case: the command line and what must hold after it ran."""

    argv: tuple[str, ...]
    unchanged: tuple[Path, ...] = ()  #: files whose bytes must be the same afterwards
    tidy: tuple[Path, ...] = ()  #: directories that must hold no temp/part file afterwards
    empty: tuple[Path, ...] = ()  #: directories that must hold no file at all afterwards (caches)
    env: tuple[tuple[str, str], ...] = ()
    fsize: int | None = None  #: RLIMIT_FSIZE in bytes for the command
    interrupt: tuple[signal.Signals, Path] | None = None  #: (signal, sent once this path exists)
    absent: tuple[str, ...] = ()  #: text that must not appear in stdout or stderr


@attrs.frozen
class Case:
    """One corpus entry: the row of docs/reliability.md and how to build it."""

    name: str
    command: str  #: as shown in the docs (IN, OUT, RUN: the built paths)
    line: str  #: text of the one line dsocr prints (the error, or the warning when ``code`` is 0)
    code: ExitCode
    build: Callable[[Path], Setup]
    needs_non_root: bool = False  #: permissions do not stop root: run in a user namespace or skipped


# ---------------------------------------------------------------------------------------
# sources


def foreign_trace(path: Path, *, gpu: bool = True, shift: int = 0) -> Path:
    """A small foreign trace: two ``step`` ranges (two passes), with a kernel each unless ``gpu`` is False."""
    b = TraceBuilder()
    t = b.thread()
    for i in range(2):
        at = shift + i * 10_000
        b.range(t, at, at + 5_000, "step")
        if gpu:
            corr = b.api(t, at + 100, at + 200, "cudaLaunchKernel_v7000")
            b.kernel(corr, at + 300, at + 2_000 + i * 50, "gemm_kernel")
    if gpu:
        b.gpu()
    return b.write(path)


def dsocr_trace(path: Path, shift: int = 0) -> Path:
    """A trace with dsocr's ranges: one repeat over one page."""
    b = TraceBuilder()
    t = b.thread()
    d = b.domain("dsocr", t)
    b.range(t, shift + 10, shift + 9_000, "repeat", domain=d)
    b.range(t, shift + 20, shift + 8_000, "page", domain=d)
    b.range(t, shift + 30, shift + 4_000, "prefill", domain=d)
    return b.write(path)


def snapshot_dir(directory: Path) -> list[Path]:
    """Every file under ``directory`` (for the leftover checks)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() or p.is_symlink()) if directory.exists() else []


def leftovers(directory: Path) -> list[Path]:
    """Temp and part files dsocr may have left under ``directory``."""
    return [
        p
        for p in snapshot_dir(directory)
        if p.name.endswith(".tmp") or ".part" in p.name or p.name.startswith(".part-")
    ]


FAKE_NSYS = f"""#!{sys.executable}
import os, shutil, sys, time
args = sys.argv[1:]
if args[0] == "--version":
    print("NVIDIA Nsight Systems version 2025.3.2.474-253236389321v0")
    sys.exit(0)
if args[0] == "export":
    out = args[args.index("-o") + 1]
    how = os.environ["FAKE_EXPORT"]
    if how == "garbage":
        open(out, "wb").write(b"this is not an SQLite file" * 100)
    elif how == "hang":
        open(out, "wb").write(b"SQLite format 3\\x00 half written")
        time.sleep(600)
    else:
        shutil.copy(how, out)
    sys.exit(0)
sys.exit(2)
"""


def _run_dir(tmp: Path, export: str) -> tuple[Path, Setup]:
    """A complete run directory (good trace, manifest) and a fake nsys whose export does ``export``."""
    run = tmp / "run"
    run.mkdir()
    (run / "trace.nsys-rep").write_bytes(b"fake nsys report")
    dsocr_trace(run / "trace.sqlite")
    manifest = {
        "status": "complete",
        "failure": None,
        "settings": {"repeats": 1, "device": "cpu", "baseline": False},
        "inputs": [{"name": "p1.png"}],
        "ranges": {"dsocr": {"repeat": 1, "page": 1, "prefill": 1}, "kernels": 0},
        "warnings": [],
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    nsys = tmp / "bin" / "nsys"
    nsys.parent.mkdir()
    nsys.write_text(FAKE_NSYS)
    nsys.chmod(0o755)
    source = {"no-ranges": str(foreign_trace(tmp / "foreign.sqlite", gpu=False))}.get(export, export)
    setup = Setup(
        ("export", str(run), "--nsys", str(nsys)),
        unchanged=(run / "trace.sqlite", run / "manifest.json"),
        tidy=(run,),
        env=(("FAKE_EXPORT", source),),
    )
    return run, setup


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _analysis_json(tmp: Path, trace: Path, out: Path) -> Path:
    """analysis.json of ``trace`` written by dsocr itself (in-process)."""
    from dsocr.analyze.pipeline import run_analysis

    out.mkdir(parents=True, exist_ok=True)
    doc = run_analysis([trace]).to_dict()
    (out / "analysis.json").write_text(json.dumps(doc, default=str))
    return out / "analysis.json"


# ---------------------------------------------------------------------------------------
# the cases (builders)


def _out_replaces_input(tmp: Path) -> Setup:
    x = tmp / "X"
    x.mkdir()
    trace = foreign_trace(x / "results.sqlite")
    return Setup(("analyze", str(trace), "--out", str(x)), unchanged=(trace,), tidy=(x,))


def _out_hardlink(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    out = tmp / "out"
    out.mkdir()
    os.link(trace, out / "analysis.json")
    return Setup(("analyze", str(trace), "--out", str(out), "--format", "json"), unchanged=(trace,), tidy=(out,))


def _out_symlink(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    out = tmp / "out"
    out.mkdir()
    (out / "report.md").symlink_to(trace)
    return Setup(("analyze", str(trace), "--out", str(out), "--format", "md"), unchanged=(trace,), tidy=(out,))


def _out_dotdot(tmp: Path) -> Setup:
    x = tmp / "X"
    (x / "sub").mkdir(parents=True)
    trace = foreign_trace(x / "results.sqlite")
    return Setup(("analyze", str(x / "sub" / ".." / "results.sqlite"), "--out", str(x / "sub" / "..")), (trace,))


def _fifo_trace(tmp: Path) -> Setup:
    return Setup(("analyze", str(_fifo(tmp / "trace.sqlite"))))


def _fifo_run_trace(tmp: Path) -> Setup:
    run = tmp / "run"
    run.mkdir()
    _fifo(run / "trace.sqlite")
    return Setup(("analyze", str(run), "--out", str(tmp / "o")))


def _device_trace(tmp: Path) -> Setup:
    return Setup(("analyze", os.devnull, "--out", str(tmp / "o")))


def _fifo_in_run_dir(tmp: Path) -> Setup:
    run = tmp / "run"
    run.mkdir()
    foreign_trace(run / "trace.sqlite")
    _fifo(run / "manifest.json")
    return Setup(("analyze", str(run), "--out", str(tmp / "o"), "--format", "json"))


def _locked_dir(tmp: Path) -> Setup:
    locked = tmp / "locked"
    (locked / "in").mkdir(parents=True)
    foreign_trace(locked / "in" / "t.sqlite")
    locked.chmod(0)
    return Setup(("analyze", str(locked / "in" / "t.sqlite"), "--out", str(tmp / "o")))


def _out_locked(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0)
    return Setup(("analyze", str(trace), "--out", str(tmp / "locked" / "o"), "--format", "json"), unchanged=(trace,))


def _vacuumed_copy(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "a.sqlite")
    con = sqlite3.connect(trace)
    con.execute("VACUUM INTO ?", (str(tmp / "b.sqlite"),))
    con.close()
    return Setup(("analyze", str(trace), str(tmp / "b.sqlite"), "--out", str(tmp / "o")))


def _export_time_copy(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "a.sqlite")
    shutil.copyfile(trace, tmp / "b.sqlite")
    con = sqlite3.connect(tmp / "b.sqlite")
    con.execute("INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_TIME_UTC', '2030-01-01T00:00:00Z')")
    con.commit()
    con.close()
    return Setup(("analyze", str(trace), str(tmp / "b.sqlite"), "--out", str(tmp / "o")))


def _cache_env(tmp: Path) -> tuple[tuple[str, str], ...]:
    return (("DSOCR_CACHE_DIR", str(tmp / "cache")),)


def _bad_xz(tmp: Path) -> Setup:
    bad = tmp / "trace.sqlite.xz"
    bad.write_bytes(b"\xfd7zXZ\x00 not really xz" * 50)
    return Setup(("analyze", str(bad), "--out", str(tmp / "o")), empty=(tmp / "cache",), env=_cache_env(tmp))


def _xz_of_text(tmp: Path) -> Setup:
    bad = tmp / "trace.sqlite.xz"
    bad.write_bytes(lzma.compress(b"hello, not a trace\n" * 100))
    return Setup(("analyze", str(bad), "--out", str(tmp / "o")), empty=(tmp / "cache",), env=_cache_env(tmp))


def _xz_of_truncated(tmp: Path) -> Setup:
    whole = foreign_trace(tmp / "whole.sqlite").read_bytes()
    bad = tmp / "trace.sqlite.xz"
    bad.write_bytes(lzma.compress(whole[: len(whole) // 2]))
    return Setup(
        ("analyze", str(bad), "--out", str(tmp / "o")),
        empty=(tmp / "cache",),
        env=_cache_env(tmp),
        absent=(str(tmp / "cache"),),
    )


def _cache_full(tmp: Path) -> Setup:
    good = tmp / "trace.sqlite.xz"
    good.write_bytes(lzma.compress(foreign_trace(tmp / "whole.sqlite").read_bytes()))
    (tmp / "whole.sqlite").unlink()
    return Setup(
        ("analyze", str(good), "--out", str(tmp / "o")), empty=(tmp / "cache",), env=_cache_env(tmp), fsize=4096
    )


def _out_full(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    out = tmp / "o"
    return Setup(
        ("analyze", str(trace), "--out", str(out)), unchanged=(trace,), tidy=(out,), fsize=len(trace.read_bytes())
    )


def _corrupt_run_file(name: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        run = tmp / "run"
        run.mkdir()
        foreign_trace(run / "trace.sqlite")
        (run / name).write_text('{"status": "complete", "settings": {')
        return Setup(("analyze", str(run), "--out", str(tmp / "o"), "--format", "json"))

    return build


def _bad_run_field(name: str, text: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        run = tmp / "run"
        run.mkdir()
        foreign_trace(run / "trace.sqlite")
        (run / name).write_text(text)
        return Setup(("analyze", str(run), "--out", str(tmp / "o"), "--format", "json"))

    return build


def _binary_calibration(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    cal = tmp / "calibration.json"
    cal.write_bytes(bytes(range(256)) * 4)
    return Setup(("analyze", str(trace), "--calibration", str(cal), "--out", str(tmp / "o")))


def _fifo_calibration(tmp: Path) -> Setup:
    trace = foreign_trace(tmp / "in.sqlite")
    return Setup(("analyze", str(trace), "--calibration", str(_fifo(tmp / "cal.json")), "--out", str(tmp / "o")))


def _diff_malformed(tmp: Path) -> Setup:
    good = _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    bad = tmp / "bad.json"
    doc = json.loads(good.read_text())
    doc["stages"] = "not a table"
    bad.write_text(json.dumps(doc))
    return Setup(("diff", str(good), str(bad)))


def _diff_bad_field(tmp: Path) -> Setup:
    good = _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    bad = tmp / "bad.json"
    doc = json.loads(good.read_text())
    doc["baseline"] = {"profiled": False, "records": [{"stage": "page", "ms": "slow"}]}
    bad.write_text(json.dumps(doc))
    return Setup(("diff", str(good), str(bad)))


def _diff_fifo(tmp: Path) -> Setup:
    good = _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    return Setup(("diff", str(good), str(_fifo(tmp / "b.json"))))


def _diff_gpu_cpu(tmp: Path) -> Setup:
    a = _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    b = _analysis_json(tmp, foreign_trace(tmp / "b.sqlite", gpu=False), tmp / "B")
    return Setup(("diff", str(a), str(b), "--json"), absent=('"verdict": "significant"',))


def _diff_out_replaces_input(tmp: Path) -> Setup:
    a = _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    b = _analysis_json(tmp, foreign_trace(tmp / "b.sqlite", shift=7), tmp / "B")
    shown = tmp / "A" / "diff.md"
    a.rename(shown)
    return Setup(("diff", str(shown), str(b), "--out", str(tmp / "A")), unchanged=(shown,), tidy=(tmp / "A",))


def _diff_corrupt_manifest(tmp: Path) -> Setup:
    _analysis_json(tmp, foreign_trace(tmp / "a.sqlite"), tmp / "A")
    _analysis_json(tmp, foreign_trace(tmp / "b.sqlite", shift=7), tmp / "B")
    (tmp / "B" / "manifest.json").write_bytes(b"\x00\x01 not json")
    return Setup(("diff", str(tmp / "A"), str(tmp / "B")))


def _model_out_dir(tmp: Path) -> Setup:
    (tmp / "d").mkdir()
    return Setup(("model", "--mode", "tiny", "--out", str(tmp / "d")), tidy=(tmp / "d",))


def _model_out_under_file(tmp: Path) -> Setup:
    (tmp / "f").write_text("a file")
    return Setup(("model", "--mode", "tiny", "--out", str(tmp / "f" / "model.md")), unchanged=(tmp / "f",))


def _model_out_full(tmp: Path) -> Setup:
    return Setup(("model", "--mode", "tiny", "--out", str(tmp / "o" / "model.md")), tidy=(tmp / "o",), fsize=1024)


def _pages_out_file(tmp: Path) -> Setup:
    (tmp / "f").write_text("a file")
    return Setup(("pages", "--out", str(tmp / "f")), unchanged=(tmp / "f",))


def _pages_out_under_file(tmp: Path) -> Setup:
    (tmp / "f").write_text("a file")
    return Setup(("pages", "--out", str(tmp / "f" / "pages")), unchanged=(tmp / "f",))


def _pages_out_run_dir(tmp: Path) -> Setup:
    run, _ = _run_dir(tmp, "garbage")
    return Setup(("pages", "--out", str(run)), unchanged=(run / "manifest.json",), tidy=(run,))


def _capture_fifo_pages(tmp: Path) -> Setup:
    return Setup(("capture", "--device", "cpu", "--pages", str(_fifo(tmp / "page.png")), "--out", str(tmp / "run")))


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (64, 90), (200, 10, 10)).save(path, format="PNG")
    return path


def _capture_out_is_input(tmp: Path) -> Setup:
    out = tmp / "run"
    out.mkdir()
    page = _png(out / "report.md")  # a PNG under a name the capture's report takes
    return Setup(("capture", "--device", "cpu", "--pages", str(page), "--out", str(out)), unchanged=(page,))


def _calibrate_out_is_input(tmp: Path) -> Setup:
    page = _png(tmp / "page.png")
    argv = ("calibrate", "--device", "cpu", "--smoke", "--mode", "tiny", "--pages", str(page), "--out", str(page))
    return Setup(argv, unchanged=(page,), tidy=(tmp,))


def _export_case(export: str, interrupt: signal.Signals | None = None) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        run, setup = _run_dir(tmp, export)
        if interrupt is None:
            return setup
        return attrs.evolve(setup, interrupt=(interrupt, run / ".trace.part.sqlite"))

    return build


# ---------------------------------------------------------------------------------------
# the corpus

CORPUS: tuple[Case, ...] = (
    Case(
        "out-is-input",
        "analyze X/results.sqlite --out X",
        "is an input of this command and would be overwritten",
        ExitCode.BAD_INPUT,
        _out_replaces_input,
    ),
    Case(
        "out-hard-link",
        "analyze IN --out OUT --format json (OUT/analysis.json a hard link of IN)",
        "is an input of this command (the same file as",
        ExitCode.BAD_INPUT,
        _out_hardlink,
    ),
    Case(
        "out-symlink",
        "analyze IN --out OUT --format md (OUT/report.md a symlink to IN)",
        "is an input of this command (the same file as",
        ExitCode.BAD_INPUT,
        _out_symlink,
    ),
    Case(
        "out-dotdot",
        "analyze X/sub/../results.sqlite --out X/sub/..",
        "is an input of this command",
        ExitCode.BAD_INPUT,
        _out_dotdot,
    ),
    Case("fifo-trace", "analyze FIFO", "is a named pipe (FIFO), not a regular file", ExitCode.BAD_INPUT, _fifo_trace),
    Case(
        "fifo-run-trace",
        "analyze RUN (RUN/trace.sqlite a FIFO)",
        "trace.sqlite: is a named pipe (FIFO), not a regular file",
        ExitCode.BAD_INPUT,
        _fifo_run_trace,
    ),
    Case(
        "device-trace",
        "analyze /dev/null",
        "is a character device, not a regular file",
        ExitCode.BAD_INPUT,
        _device_trace,
    ),
    Case(
        "fifo-manifest",
        "analyze RUN (RUN/manifest.json a FIFO)",
        "manifest.json: not a regular file: left out",
        ExitCode.OK,
        _fifo_in_run_dir,
    ),
    Case(
        "locked-dir",
        "analyze LOCKED/in/t.sqlite (LOCKED mode 000)",
        "permission denied on a directory in its path",
        ExitCode.NOT_FOUND,
        _locked_dir,
        needs_non_root=True,
    ),
    Case(
        "out-locked",
        "analyze IN --out LOCKED/o (LOCKED mode 000)",
        "cannot write there (Permission denied)",
        ExitCode.ENVIRONMENT,
        _out_locked,
        needs_non_root=True,
    ),
    Case(
        "vacuum-copy",
        "analyze A B (B = VACUUM INTO of A)",
        "copies of one trace (same content), not two passes",
        ExitCode.BAD_INPUT,
        _vacuumed_copy,
    ),
    Case(
        "export-time-copy",
        "analyze A B (B = A with another EXPORT_TIME_UTC)",
        "copies of one trace (same content), not two passes",
        ExitCode.BAD_INPUT,
        _export_time_copy,
    ),
    Case("bad-xz", "analyze IN.sqlite.xz (not xz)", "not a valid .xz file", ExitCode.BAD_INPUT, _bad_xz),
    Case(
        "xz-of-text",
        "analyze IN.sqlite.xz (xz of a text file)",
        "decompresses to something that is not an SQLite file",
        ExitCode.BAD_INPUT,
        _xz_of_text,
    ),
    Case(
        "xz-of-truncated",
        "analyze IN.sqlite.xz (xz of half an export)",
        "trace.sqlite.xz (decompressed)",
        ExitCode.BAD_INPUT,
        _xz_of_truncated,
    ),
    Case(
        "cache-full",
        "analyze IN.sqlite.xz, the cache full",
        "cannot decompress it into the cache",
        ExitCode.ENVIRONMENT,
        _cache_full,
    ),
    Case(
        "out-full",
        "analyze IN --out OUT, OUT full",
        "cannot be written (",
        ExitCode.ENVIRONMENT,
        _out_full,
    ),
    Case(
        "corrupt-manifest",
        "analyze RUN (RUN/manifest.json corrupt)",
        "manifest.json: corrupt (not valid JSON",
        ExitCode.OK,
        _corrupt_run_file("manifest.json"),
    ),
    Case(
        "corrupt-timing",
        "analyze RUN (RUN/timing.json corrupt)",
        "timing.json: corrupt (not valid JSON",
        ExitCode.OK,
        _corrupt_run_file("timing.json"),
    ),
    Case(
        "bad-timing-field",
        "analyze RUN (RUN/timing.json with a record's ms a string)",
        "timing.json: field records[0].ms is 'slow', expected a number",
        ExitCode.BAD_INPUT,
        _bad_run_field("timing.json", '{"profiled": true, "records": [{"stage": "page", "ms": "slow"}]}'),
    ),
    Case(
        "bad-execution-field",
        "analyze RUN (RUN/timing-baseline.json with model.execution.decode unknown)",
        "timing-baseline.json: field model.execution.decode is 'fast', expected eager or graph or compile",
        ExitCode.BAD_INPUT,
        _bad_run_field("timing-baseline.json", '{"model": {"execution": {"decode": "fast"}}}'),
    ),
    Case(
        "bad-manifest-field",
        "analyze RUN (RUN/manifest.json with settings.pages not a list)",
        "manifest.json: field settings.pages is 'a.png', expected a list",
        ExitCode.BAD_INPUT,
        _bad_run_field("manifest.json", '{"status": "complete", "settings": {"pages": "a.png"}}'),
    ),
    Case(
        "binary-calibration",
        "analyze IN --calibration BINARY",
        "not a text file, so not a calibration file",
        ExitCode.BAD_INPUT,
        _binary_calibration,
    ),
    Case(
        "fifo-calibration",
        "analyze IN --calibration FIFO",
        "not a regular file; pass the calibration.json",
        ExitCode.BAD_INPUT,
        _fifo_calibration,
    ),
    Case(
        "diff-malformed",
        "diff A.json BAD.json ('stages' not a table)",
        "malformed analysis document ('stages' is not a list of objects)",
        ExitCode.BAD_INPUT,
        _diff_malformed,
    ),
    Case(
        "diff-bad-field",
        "diff A.json BAD.json (a baseline record's ms a string)",
        "bad.json: field baseline.records[0].ms is 'slow', expected a number",
        ExitCode.BAD_INPUT,
        _diff_bad_field,
    ),
    Case("diff-fifo", "diff A.json FIFO", "is a named pipe (FIFO), not a regular file", ExitCode.BAD_INPUT, _diff_fifo),
    Case(
        "diff-gpu-vs-cpu",
        "diff GPU.json CPU.json",
        "B is a CPU-only run (its trace has no CUDA activity), A ran on a GPU: they are not comparable",
        ExitCode.OK,
        _diff_gpu_cpu,
    ),
    Case(
        "diff-out-is-input",
        "diff A/diff.md B.json --out A",
        "is an input of this command and would be overwritten",
        ExitCode.BAD_INPUT,
        _diff_out_replaces_input,
    ),
    Case(
        "diff-corrupt-manifest",
        "diff A B (B/manifest.json corrupt)",
        "manifest.json: corrupt (not",
        ExitCode.OK,
        _diff_corrupt_manifest,
    ),
    Case(
        "model-out-dir",
        "model --out DIR (exists)",
        "is a directory; give --out a file name",
        ExitCode.USAGE,
        _model_out_dir,
    ),
    Case(
        "model-out-under-file",
        "model --out FILE/model.md",
        "is a file, not a directory",
        ExitCode.USAGE,
        _model_out_under_file,
    ),
    Case(
        "model-out-full",
        "model --out OUT, disk full",
        "cannot be written (File too large)",
        ExitCode.ENVIRONMENT,
        _model_out_full,
    ),
    Case("pages-out-file", "pages --out FILE", "exists and is not a directory", ExitCode.USAGE, _pages_out_file),
    Case(
        "pages-out-under-file",
        "pages --out FILE/pages",
        "is a file, not a directory",
        ExitCode.USAGE,
        _pages_out_under_file,
    ),
    Case(
        "pages-out-run-dir",
        "pages --out RUN (a capture's run directory)",
        "its manifest.json is not a page set's",
        ExitCode.BAD_INPUT,
        _pages_out_run_dir,
    ),
    Case(
        "capture-fifo-pages",
        "capture --device cpu --pages FIFO",
        "is a named pipe (FIFO), not a regular file",
        ExitCode.BAD_INPUT,
        _capture_fifo_pages,
    ),
    Case(
        "capture-out-is-input",
        "capture --device cpu --pages RUN/report.md --out RUN (the page a PNG)",
        "is an input of this command and would be overwritten",
        ExitCode.BAD_INPUT,
        _capture_out_is_input,
    ),
    Case(
        "calibrate-out-is-input",
        "calibrate --device cpu --smoke --pages P.png --out P.png",
        "is an input of this command and would be overwritten",
        ExitCode.BAD_INPUT,
        _calibrate_out_is_input,
    ),
    Case(
        "export-no-ranges",
        "export RUN (the new export has no dsocr ranges)",
        "trace.sqlite and manifest.json were left as they were",
        ExitCode.RUN_FAILED,
        _export_case("no-ranges"),
    ),
    Case(
        "export-unreadable",
        "export RUN (the new export is not SQLite)",
        "wrote a broken file",
        ExitCode.RUN_FAILED,
        _export_case("garbage"),
    ),
    Case(
        "export-sigint",
        "export RUN, Ctrl-C during the export",
        "dsocr: interrupted",
        ExitCode.INTERRUPTED,
        _export_case("hang", signal.SIGINT),
    ),
    Case(
        "export-sigterm",
        "export RUN, SIGTERM during the export",
        "dsocr: interrupted",
        ExitCode.INTERRUPTED,
        _export_case("hang", signal.SIGTERM),
    ),
)
