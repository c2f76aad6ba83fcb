"""Time `dsocr analyze` against NVIDIA's report scripts on the same files, in one run.

    python benchmarks/bench_analyze.py                      # fixture, x30 synthetic, op-range series
    python benchmarks/bench_analyze.py --reps 5 --write-docs
    python benchmarks/bench_analyze.py --only fixture --reps 3
    python benchmarks/bench_analyze.py --only fixture --baseline-src ../old/src   # before/after in one run

For every trace, each round runs, as separate processes (interpreter start included):
`dsocr analyze FILE --out TMP --format json,md,sqlite --quiet`, then NVIDIA's
`nvtx_gpu_proj_sum.py` and `cuda_gpu_kern_sum.py` (from Debian's nsight-systems 2023.4, see
DEVELOPERS.md) with NVIDIA's bundled SQLite, stdout to a file. Wall and CPU time and peak RSS
come from `os.wait4` of that very process. The file is read once beforehand so that both tools
start from a warm page cache. NVIDIA = the sum of its two scripts (peak: the larger). Medians
over up to `--reps` rounds (no new round once `--budget-s` is spent on a trace). The last
round's outputs are compared (dsocr's projection and kernel tables against NVIDIA's CSVs). With
`--baseline-src DIR`, every round also runs dsocr from that source tree first (PYTHONPATH=DIR: e.g. the
code before a change), so that before and after are measured alternately in the same run.
A Markdown table goes to stdout, raw numbers to WORKDIR/bench_analyze.json (the table to .md), and with
`--write-docs` (or later `--docs-from WORKDIR/bench_analyze.md`) into docs/benchmarks.md between
the `bench_analyze` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "nsys" / "h100-decoder-moe" / "trace.sqlite.xz"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_analyze:begin -->", "<!-- bench_analyze:end -->"
NVIDIA_REPORTS = ("nvtx_gpu_proj_sum", "cuda_gpu_kern_sum")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_synthetic_trace as synth  # noqa: E402


@dataclass
class Sample:
    """One process: wall seconds, peak RSS in MB, exit code."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    rc: int


@dataclass
class Case:
    """One trace and its timings."""

    name: str
    path: str
    size_mb: float
    rows: dict[str, int]
    dsocr: list[Sample] = field(default_factory=list)
    baseline: list[Sample] = field(default_factory=list)
    nvidia: dict[str, list[Sample]] = field(default_factory=dict)
    agreement: str = "not checked"

    def dsocr_s(self) -> float:
        return statistics.median(s.wall_s for s in _ok(self.dsocr))

    def nvidia_s(self, report: str | None = None) -> float:
        reports = [report] if report else list(self.nvidia)
        return sum(statistics.median(s.wall_s for s in _ok(self.nvidia[r])) for r in reports)

    def dsocr_cpu(self) -> float:
        return statistics.median(s.cpu_s for s in _ok(self.dsocr))

    def nvidia_cpu(self) -> float:
        return sum(statistics.median(s.cpu_s for s in _ok(v)) for v in self.nvidia.values())

    def dsocr_mb(self) -> float:
        return statistics.median(s.peak_mb for s in _ok(self.dsocr))

    def nvidia_mb(self) -> float:
        return max(statistics.median(s.peak_mb for s in _ok(v)) for v in self.nvidia.values())


def _ok(samples: list[Sample]) -> list[Sample]:
    """The successful runs (all of them if none succeeded, so that the table still shows something)."""
    return [s for s in samples if s.rc == 0] or samples


#: A tiny launcher: forks the command from a small process and reports the child's own rusage.
#: Measuring the child straight from this (possibly large) process would not do: Linux keeps the
#: parent's resident set, inherited at fork/vfork, in the child's ru_maxrss across exec.
_LAUNCHER = """
import os, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.close(fd)
    os.execvp(argv[0], argv)
_, status, ru = os.wait4(pid, 0)
os.write(fd, f"{os.waitstatus_to_exitcode(status)} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss}".encode())
"""


def measure(cmd: Sequence[str], env: dict[str, str] | None = None, stdout: Path | None = None) -> Sample:
    """Run `cmd` to completion; its wall time, CPU time and its own peak RSS (not its parent's)."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(write_fd), *cmd]
    with open(stdout or os.devnull, "wb") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(launcher, stdout=out, stderr=subprocess.PIPE, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.wait()
        wall = time.perf_counter() - t
    with os.fdopen(read_fd, "rb") as report:
        fields = report.read().decode().split()
    if len(fields) != 3:
        print(f"bench: {cmd[0]} ... could not be measured: {err.strip()[-500:]}", file=sys.stderr)
        return Sample(wall, 0.0, 0.0, proc.returncode or 1)
    rc, cpu, maxrss_kb = int(fields[0]), float(fields[1]), int(fields[2])
    if rc != 0:
        print(f"bench: {cmd[0]} ... exited {rc}: {err.strip()[-500:]}", file=sys.stderr)
    return Sample(wall, cpu, maxrss_kb / 1024, rc)


def nvidia_target(home: Path) -> Path:
    found = sorted(home.glob("**/target-linux-x64/reports/nvtx_gpu_proj_sum.py"))
    if not found:
        sys.exit(
            f"bench: no NVIDIA report scripts under {home}; run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME"
        )
    return found[0].parent.parent


def nvidia_cmd(target: Path, report: str, trace: Path) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(target),
        "PYTHONPATH": f"{target / 'python' / 'lib'}:{target / 'reports'}",
    }
    return ["python3", str(target / "reports" / f"{report}.py"), str(trace)], env


def dsocr_cmd(trace: Path, out: Path) -> list[str]:
    exe = shutil.which("dsocr", path=str(Path(sys.executable).parent)) or "dsocr"
    return [exe, "analyze", str(trace), "--out", str(out), "--format", "json,md,sqlite", "--quiet"]


def warm_page_cache(path: Path) -> None:
    """Read the file once, so that both tools start from the same warm page cache."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def run_case(
    case: Case, target: Path, reps: int, budget_s: float, scratch: Path, baseline_src: Path | None = None
) -> None:
    """Alternate dsocr and NVIDIA's scripts on one trace: `reps` rounds, fewer once `budget_s` is spent."""
    trace = Path(case.path)
    out = scratch / "dsocr-out"
    warm_page_cache(trace)
    began = time.perf_counter()
    for rep in range(1, reps + 1):
        if rep > 1 and time.perf_counter() - began > budget_s:
            break
        shutil.rmtree(out, ignore_errors=True)
        if baseline_src is not None:
            shutil.rmtree(out, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(baseline_src)}
            case.baseline.append(b := measure(dsocr_cmd(trace, out), env))
            print(f"bench: {case.name} rep {rep}: baseline dsocr {b.wall_s:.2f} s {b.peak_mb:.0f} MB", file=sys.stderr)
            shutil.rmtree(out, ignore_errors=True)
        d = measure(dsocr_cmd(trace, out))
        n = {}
        for report in NVIDIA_REPORTS:
            cmd, env = nvidia_cmd(target, report, trace)
            n[report] = measure(cmd, env, stdout=scratch / f"{report}.csv")
        case.dsocr.append(d)
        for report, sample in n.items():
            case.nvidia.setdefault(report, []).append(sample)
        print(
            f"bench: {case.name} rep {rep}: dsocr {d.wall_s:.2f} s {d.peak_mb:.0f} MB (rc {d.rc}); "
            + ", ".join(f"{r} {s.wall_s:.2f} s {s.peak_mb:.0f} MB" for r, s in n.items()),
            file=sys.stderr,
        )
    case.agreement = agreement(out, scratch / "nvtx_gpu_proj_sum.csv", scratch / "cuda_gpu_kern_sum.csv")
    shutil.rmtree(out, ignore_errors=True)


def _dsocr_tables(out: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]] | None:
    """dsocr's projection and kernel rows: results.sqlite (always every row), else analysis.json."""
    results, doc = out / "results.sqlite", out / "analysis.json"
    if results.exists():
        with sqlite3.connect(results) as con:
            con.row_factory = sqlite3.Row
            proj = [dict(r) for r in con.execute("SELECT * FROM nvtx_projection")]
            kern = [dict(r) for r in con.execute("SELECT * FROM kernels")]
        return proj, kern
    if doc.exists():  # analysis.json may leave out per-instance operator ranges
        data = json.loads(doc.read_text())
        return data["nvtx_projection"], data["kernels"]
    return None


def agreement(out: Path, proj_csv: Path, kern_csv: Path) -> str:
    """Whether dsocr's projection and kernel tables (in `out`) equal NVIDIA's CSVs (keys, instances, ns totals)."""
    import polars as pl

    tables = _dsocr_tables(out)
    if tables is None:
        return "no dsocr output"
    proj = pl.DataFrame(tables[0]).select("range", "style", "instances", "total_proj_ns", "gpu_ops")
    nv_proj = pl.read_csv(proj_csv, infer_schema_length=None).select(
        pl.col("Range").alias("range"),
        pl.col("Style").alias("style"),
        pl.col("Range Instances").alias("instances"),
        pl.col("Total Proj Time:dur_ns").alias("total_proj_ns"),
        pl.col("Total GPU Ops").alias("gpu_ops"),
    )
    kern = pl.DataFrame(tables[1]).select("name", "instances", "total_ns")
    nv_kern = pl.read_csv(kern_csv, infer_schema_length=None).select(
        pl.col("Name").alias("name"),
        pl.col("Instances").alias("instances"),
        pl.col("Total Time:dur_ns").alias("total_ns"),
    )
    bad_proj = proj.join(nv_proj, on=proj.columns, how="anti").height
    bad_proj += nv_proj.join(proj, on=proj.columns, how="anti").height
    bad_kern = kern.join(nv_kern, on=kern.columns, how="anti").height
    bad_kern += nv_kern.join(kern, on=kern.columns, how="anti").height
    if bad_proj == bad_kern == 0:
        return f"equal ({nv_proj.height:,} ranges, {nv_kern.height} kernels)"
    return f"DIFFERENT: {bad_proj} range rows, {bad_kern} kernel rows"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem_gb:.0f} GiB RAM, {platform.system()} {platform.release()}"


def versions() -> str:
    import polars

    exe = dsocr_cmd(Path("x"), Path("x"))[0]
    dsocr = subprocess.run([exe, "version"], capture_output=True, text=True).stdout.strip().splitlines()
    system_python = subprocess.run(["python3", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{dsocr[0] if dsocr else 'dsocr'} with polars {polars.__version__}, Python {platform.python_version()}; "
        f"NVIDIA's report scripts from Nsight Systems 2023.4.4 (Debian) on {system_python}"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(cases: list[Case]) -> str:
    head = (
        "| trace | reps | file | kernels | runtime rows | NVTX ranges | dsocr s | NVIDIA proj s | NVIDIA kern s "
        "| NVIDIA s | **time dsocr/NVIDIA** | CPU s dsocr / NVIDIA | dsocr peak MB | NVIDIA peak MB "
        "| peak dsocr/NVIDIA | dsocr = NVIDIA? |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for c in cases:
        failed = sum(1 for s in c.dsocr if s.rc) + sum(1 for v in c.nvidia.values() for s in v if s.rc)
        note = f" ({failed} run(s) FAILED, left out)" if failed else ""
        rows.append(
            f"| {c.name}{note} | {len(c.dsocr)} | {c.size_mb:,.0f} MB "
            f"| {c.rows.get('CUPTI_ACTIVITY_KIND_KERNEL', 0):,} | {c.rows.get('CUPTI_ACTIVITY_KIND_RUNTIME', 0):,} "
            f"| {c.rows.get('NVTX ranges', 0):,} | {c.dsocr_s():.2f} | {c.nvidia_s('nvtx_gpu_proj_sum'):.2f} "
            f"| {c.nvidia_s('cuda_gpu_kern_sum'):.2f} | {c.nvidia_s():.2f} | **{ratio(c.dsocr_s(), c.nvidia_s())}** "
            f"| {c.dsocr_cpu():.2f} / {c.nvidia_cpu():.2f} "
            f"| {c.dsocr_mb():,.0f} | {c.nvidia_mb():,.0f} | {ratio(c.dsocr_mb(), c.nvidia_mb())} "
            f"| {c.agreement} |"
        )
    return head + "\n".join(rows) + "\n"


def baseline_table(cases: list[Case]) -> str:
    """Before (--baseline-src) and after, each against NVIDIA's scripts of the same rounds."""
    head = (
        "| trace | reps | before s | after s | NVIDIA s | **before/NVIDIA** | **after/NVIDIA** | before peak MB "
        "| after peak MB | NVIDIA peak MB | after peak / NVIDIA |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for c in cases:
        if not c.baseline:
            continue
        before_s = statistics.median(s.wall_s for s in _ok(c.baseline))
        before_mb = statistics.median(s.peak_mb for s in _ok(c.baseline))
        rows.append(
            f"| {c.name} | {len(c.dsocr)} | {before_s:.2f} | {c.dsocr_s():.2f} | {c.nvidia_s():.2f} "
            f"| **{ratio(before_s, c.nvidia_s())}** | **{ratio(c.dsocr_s(), c.nvidia_s())}** | {before_mb:,.0f} "
            f"| {c.dsocr_mb():,.0f} | {c.nvidia_mb():,.0f} | {ratio(c.dsocr_mb(), c.nvidia_mb())} |"
        )
    return head + "\n".join(rows) + "\n" if rows else ""


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def report(cases: list[Case], reps: int, load_before: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {when} on {machine()}; {versions()}. Load average before / after: "
        f"{load_before} / {loadavg()}.\n\n"
        f"Median of up to {reps} rounds per trace (fewer on the slow ones, column reps), the file read once "
        "beforehand so both tools start from a warm page cache; each tool a fresh process "
        "(interpreter start and imports included), run alternately on the same file in one run of "
        "`python benchmarks/bench_analyze.py`. dsocr: `dsocr analyze FILE --out DIR --format json,md,sqlite "
        "--quiet` (everything: loading, projection, stages, operators, three output files). NVIDIA: "
        "`nvtx_gpu_proj_sum.py` + `cuda_gpu_kern_sum.py`, times summed, peak the larger. Time = wall "
        "clock; CPU = user + system of the process (dsocr uses both cores, NVIDIA's SQLite one); "
        "peak = the process's max RSS. Last column: dsocr's `nvtx_projection` and `kernels` tables (results.sqlite) "
        "against NVIDIA's CSVs of the same run (range/kernel names, instances, integer ns totals, GPU ops).\n\n"
        + table(cases)
        + (
            f"\nBefore and after, alternately in the same rounds:\n\n{before}"
            if (before := baseline_table(cases))
            else ""
        )
    )


def write_docs(text: str) -> None:
    section = f"{BEGIN}\n{text}{END}\n"
    old = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + section + old[old.index(END) + len(END) + 1 :]
    else:
        new = old.rstrip("\n") + "\n\n## Analyzer: dsocr analyze vs NVIDIA's report scripts\n\n" + section
    tmp = DOCS.with_suffix(".md.part")
    tmp.write_text(new)
    tmp.replace(DOCS)


def rows_of(path: Path) -> dict[str, int]:
    return synth.counts(path)


def prepare(args: argparse.Namespace, workdir: Path) -> list[Case]:
    """The traces to time, built (or reused) in `workdir`."""
    cases: list[Case] = []
    fixture = synth.materialize_source(args.fixture, workdir) if args.fixture.suffix == ".xz" else args.fixture
    wanted = set(args.only.split(",")) if args.only else {"fixture", "scaled", "ops"}

    def add(name: str, path: Path) -> None:
        cases.append(Case(name, str(path), path.stat().st_size / 1e6, rows_of(path)))

    if "fixture" in wanted:
        add("H100 fixture", fixture)
    if "scaled" in wanted:
        out = workdir / f"x{args.scale}.sqlite"
        if not out.exists():
            print(f"bench: building {out}", file=sys.stderr)
            synth.build(fixture, out, args.scale)
        add(f"synthetic x{args.scale}", out)
    if "ops" in wanted:
        for r in [int(x) for x in args.op_ranges.split(",") if x]:
            out = workdir / f"ops{r}-x{args.op_scale}.sqlite"
            if not out.exists():
                print(f"bench: building {out}", file=sys.stderr)
                synth.build(fixture, out, args.op_scale, op_ranges=r)
            add(f"x{args.op_scale}, {r} op ranges/kernel", out)
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per tool and trace (median)")
    p.add_argument(
        "--budget-s", type=float, default=150.0, help="no new round on a trace once its rounds took this long"
    )
    p.add_argument("--fixture", type=Path, default=FIXTURE, help="the real export replicated for the synthetic ones")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dsocr-bench")
    p.add_argument("--scale", type=int, default=30, help="replicas for the large synthetic trace (30: 2.14M kernels)")
    p.add_argument("--op-ranges", default="0,2,4,8", help="comma list of operator ranges per kernel for the series")
    p.add_argument("--op-scale", type=int, default=4, help="replicas for the operator-range series")
    p.add_argument("--only", default="", help="comma list of fixture,scaled,ops (default: all)")
    p.add_argument("--nsys-home", type=Path, default=Path(os.environ.get("DSOCR_NSYS_HOME", REPO / ".tools" / "nsys")))
    p.add_argument("--baseline-src", type=Path, help="also time dsocr from this source tree (PYTHONPATH), alternately")
    p.add_argument("--write-docs", action="store_true", help="replace the bench_analyze section of docs/benchmarks.md")
    p.add_argument("--docs-from", type=Path, help="only put this saved bench_analyze.md into docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.docs_from:
        write_docs(args.docs_from.read_text())
        print(f"bench: wrote {DOCS} from {args.docs_from}", file=sys.stderr)
        return 0
    if not args.fixture.is_file():
        print(f"bench: {args.fixture}: no such file; pass --fixture with an nsys SQLite export", file=sys.stderr)
        return 2
    target = nvidia_target(args.nsys_home)
    args.workdir.mkdir(parents=True, exist_ok=True)
    cases = prepare(args, args.workdir)
    load_before = loadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        for case in cases:
            run_case(case, target, args.reps, args.budget_s, Path(scratch), args.baseline_src)
    text = report(cases, args.reps, load_before)
    (args.workdir / "bench_analyze.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    (args.workdir / "bench_analyze.md").write_text(text)
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"bench: wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
