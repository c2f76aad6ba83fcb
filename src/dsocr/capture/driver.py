"""The capture driver: ``dsocr capture`` from inputs to a complete run directory.

Order (a problem stops the run before the model loads whenever it can be seen early):

1. inputs (decoded once: a bad file is named), the machine (GPU or ``--device cpu``, torch, the
   worker), nsys (found, version, new enough for torch's CUDA);
2. the run directory ``runs/<date>-<time>-<gpu>-<mode>/`` with ``manifest.json`` (status
   ``running``) and the worker configs;
3. the unprofiled baseline runs planned before the profiled pass (``--baseline-runs`` 2 or more);
4. the worker under ``nsys profile`` (progress lines drive the bar; output in ``capture.log``);
5. ``nsys export --type sqlite`` and the check that the ``dsocr`` ranges reached the trace;
6. the unprofiled baseline runs planned after it: the same worker again without nsys (the first
   writes ``timing-baseline.json``, the others ``timing-baseline-<k>.json``, see :func:`baseline_plan`);
7. on a GPU (``--calibrate``, default on there) ``dsocr calibrate`` in its own process: every kernel
   signature of the pages' workloads timed alone into ``calibration.json`` (a failure is a warning);
8. the manifest's status ``complete``; then the analyzer (a callback) unless ``--no-analyze``.

Baseline runs on both sides of the profiled pass measure the host's own drift between identical
unprofiled runs, which the report sets beside the profiler's overhead.

Failures raise :mod:`dsocr.contract.errors` classes with one line; the manifest then says
``failed`` (with the phase and message) or, on Ctrl-C, ``interrupted``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

import dsocr
from dsocr.capture import export as export_mod
from dsocr.capture import inputs as inputs_mod
from dsocr.capture import manifest as manifest_mod
from dsocr.capture import nsys as nsys_mod
from dsocr.capture import progress
from dsocr.capture import shards as shards_mod
from dsocr.capture.worker_config import CAPTURE_CUDA, CAPTURE_NONE, CAPTURE_NVTX, Shrink, WorkerConfig
from dsocr.contract import atomic, rundir
from dsocr.contract.errors import BadInput, BadUsage, DsocrError, EnvironmentProblem, InputNotFound, RunFailed
from dsocr.contract.jsondoc import field_keys
from dsocr.contract.paths import check_input, refuse_overwrite
from dsocr.contract.run_manifest import (
    KIND as MANIFEST_KIND,
)
from dsocr.contract.run_manifest import (
    ManifestInput,
    ManifestSettings,
    ManifestTiming,
    RunManifest,
    TimingRun,
    read_manifest,
)

WORKER_MODULE: Final = "dsocr.capture.worker"
LAUNCHER_MODULE: Final = "dsocr.capture.launcher"
#: Where the workers of a data-parallel capture meet to open and close the capture range together.
BARRIER_DIR: Final = ".barrier"
WORKER_CONFIG: Final = "worker-config.json"
WORKER_CONFIG_BASELINE: Final = "worker-config-baseline.json"
WORKER_CONFIG_BASELINE_NUMBERED: Final = "worker-config-baseline-{k}.json"
CAPTURE_LOG: Final = "capture.log"
BASELINE_LOG: Final = "baseline.log"
TRACE_BASENAME: Final = "trace"

PHASE_PREPARE: Final = "prepare"
PHASE_PROFILE: Final = "profile"
PHASE_EXPORT: Final = "export"
PHASE_BASELINE: Final = "baseline"
PHASE_ANALYZE: Final = "analyze"
PHASE_CALIBRATE: Final = "calibrate"
CALIBRATE_LOG: Final = "calibrate.log"

#: Where an unprofiled run happens relative to the profiled pass (``timing.runs[].position``).
BEFORE: Final = "before"
AFTER: Final = "after"
PROFILED: Final = "profiled"
#: The position of every run of an unprofiled-only capture (``profile`` False): there is no profiled pass.
UNPROFILED_ONLY: Final = "unprofiled-only"

#: The reporter's ``info`` line that names the run directory (followed by the path).
RUN_DIR_MESSAGE: Final = "run directory: "
_OOM_PATTERNS: Final = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED")
_INTERRUPT_GRACE_S: Final = 30.0


@attrs.frozen
class CaptureSettings:
    """Every ``dsocr capture`` option (``pages`` empty: the shipped standard set)."""

    repeats: int = 3
    pages: tuple[Path, ...] = ()
    mode: str = "gundam"
    crops: str = "auto"
    max_new_tokens: int = 32
    prompt_tokens: int = 12
    warmup: int = 2
    #: Untimed passes over all pages right after the capture range opens (in the baselines too).
    capture_warmup: int = 1
    model: str = "replica"
    trust_remote_code: bool = False
    #: A checkpoint directory run with seeded random weights (no safetensors needed).
    random_weights: bool = False
    #: Attention: None = the model path's default (``eager``: the replica's default execution and the
    #: checkpoint's own code); the replica also runs ``sdpa``, the checkpoint's code ``flash_attention_2``.
    attn: str | None = None
    #: The replica's MoE execution: ``loop`` (the vendor's, a host sync per MoE layer) or ``grouped``.
    moe: str = "loop"
    #: Decode: ``eager`` (the dynamic cache), ``graph`` (static cache, one CUDA graph per step shape, replayed)
    #: or ``compile`` (the static step under torch.compile reduce-overhead); docs/variants.md.
    decode: str = "eager"
    #: Pages per forward, bucketed by crop grid (docs/variants.md).
    batch: int = 1
    #: nsys ``--cuda-graph-trace``: ``node`` (every kernel of a replayed graph, the default) or ``graph``
    #: (one range per graph launch, cheaper to trace).
    cuda_graph_trace: str = "node"
    device: str = "cuda"
    dtype: str = "auto"
    op_ranges: bool = False
    module_ranges: bool = False
    #: One extra pass under the PyTorch profiler with memory recording into op_memory.json (see
    #: :func:`op_memory_run`); its worker runs it after its capture range closed.
    op_memory: bool = False
    baseline: bool = True
    #: Unprofiled runs (``baseline`` False means none): 1 after the profiled pass; 2 one before and one
    #: after; more alternate (the extra one after).
    baseline_runs: int = 2
    analyze: bool = True
    #: Time every kernel signature alone (``dsocr calibrate``) into the run's calibration.json:
    #: None = on for a GPU run, off on the CPU (CPU times say nothing about a GPU trace).
    calibrate: bool | None = None
    nsys: Path | None = None
    out: Path | None = None
    runs_dir: Path = Path(rundir.RUNS_DIR)
    seed: int = 0
    shrink: Shrink | None = None
    #: The named workload asked for with --workload (``None``: the flags and defaults; see ``manifest.workload``).
    workload: str | None = None
    #: False: no nsys at all, only the unprofiled runs (``baseline_runs`` of them, CUDA-event timing; what
    #: ``dsocr whatif`` does for the variants it does not profile). No trace, no export, no analysis.
    profile: bool = True
    #: Tests only: the command that replaces ``python -m dsocr.capture.worker``.
    worker_command: tuple[str, ...] | None = None
    #: A data-parallel capture (``--gpus N`` / ``--devices``): one worker per entry (``cuda:N`` or
    #: ``cpu``; a device may repeat), pages sharded over them (:mod:`dsocr.capture.shards`).
    devices: tuple[str, ...] = ()

    @property
    def workers(self) -> int:
        """How many worker processes run the pages (1 unless ``devices`` lists several)."""
        return max(1, len(self.devices))

    @property
    def is_cpu(self) -> bool:
        """Whether the run is on the CPU."""
        return self.device == "cpu"

    @property
    def attn_implementation(self) -> str | None:
        """The attention the worker runs (None: the worker config's default for the replica)."""
        if self.attn is None and self.trust_remote_code:
            return "eager"
        return self.attn

    @property
    def calibrates(self) -> bool:
        """Whether this capture runs ``dsocr calibrate`` after the baselines."""
        if self.shrink is not None or self.worker_command is not None:
            return False  # tests' shrunk models: shapes the calibration would not match
        return (not self.is_cpu) if self.calibrate is None else self.calibrate

    @property
    def baselines(self) -> int:
        """How many unprofiled runs this capture makes (0 with ``--no-baseline``)."""
        return self.baseline_runs if self.baseline else 0

    def to_json(self) -> dict[str, Any]:
        """JSON data for the manifest."""
        data = attrs.asdict(self, recurse=True)
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items() if k != "worker_command"}
        out["pages"] = [str(p) for p in self.pages]
        out["attn"] = self.attn_implementation or attrs.fields(WorkerConfig).attn_implementation.default
        out["devices"] = list(self.devices)
        return out

    def worker_config(
        self,
        pages: Sequence[inputs_mod.InputPage],
        timing_out: Path,
        profiled: bool,
        op_memory_out: Path | None = None,
    ) -> WorkerConfig:
        """The worker's config for the profiled pass or the unprofiled baseline (``op_memory_out``: this one
        runs the --op-memory pass)."""
        capture_range = CAPTURE_NONE if not profiled else CAPTURE_NVTX if self.is_cpu else CAPTURE_CUDA
        cfg = WorkerConfig(
            pages=tuple(p.ref for p in pages),
            timing_out=str(timing_out),
            device=self.device,
            dtype=self.dtype,
            mode=self.mode,
            crops=self.crops,
            repeats=self.repeats,
            warmup=self.warmup,
            capture_warmup=self.capture_warmup,
            max_new_tokens=self.max_new_tokens,
            prompt_tokens=self.prompt_tokens,
            seed=self.seed,
            model=self.model,
            trust_remote_code=self.trust_remote_code,
            random_weights=self.random_weights,
            moe=self.moe,
            decode=self.decode,
            batch=self.batch,
            op_ranges=self.op_ranges,
            module_ranges=self.module_ranges,
            op_memory_out=None if op_memory_out is None else str(op_memory_out),
            capture_range=capture_range,
            shrink=self.shrink,
            progress=True,
        )
        attn = self.attn_implementation
        return (attrs.evolve(cfg, attn_implementation=attn) if attn else cfg).validate()


@attrs.frozen
class BaselineRun:
    """One planned unprofiled run."""

    k: int  #: 1-based place among the unprofiled runs, in execution order
    position: str  #: BEFORE or AFTER the profiled pass
    timing: str  #: its timing file in the run directory
    config: str  #: its worker config in the run directory


def baseline_plan(n: int) -> tuple[BaselineRun, ...]:
    """``n`` unprofiled runs in execution order: ``n // 2`` before the profiled pass, the rest after.

    The first run after the profiled pass writes ``timing-baseline.json`` (the layout of one-baseline
    captures); every other run k writes ``timing-baseline-<k>.json``.
    """
    before = n // 2
    out = []
    for k in range(1, n + 1):
        plain = k == before + 1
        out.append(
            BaselineRun(
                k,
                BEFORE if k <= before else AFTER,
                rundir.TIMING_BASELINE if plain else rundir.TIMING_BASELINE_NUMBERED.format(k=k),
                WORKER_CONFIG_BASELINE if plain else WORKER_CONFIG_BASELINE_NUMBERED.format(k=k),
            )
        )
    return tuple(out)


def unprofiled_plan(n: int) -> tuple[BaselineRun, ...]:
    """The ``n`` runs of an unprofiled-only capture, in order: the first writes ``timing-baseline.json``, run k
    ``timing-baseline-<k>.json`` (the files :func:`baseline_plan` names, so readers find them alike)."""
    return tuple(
        BaselineRun(
            k,
            UNPROFILED_ONLY,
            rundir.TIMING_BASELINE if k == 1 else rundir.TIMING_BASELINE_NUMBERED.format(k=k),
            WORKER_CONFIG_BASELINE if k == 1 else WORKER_CONFIG_BASELINE_NUMBERED.format(k=k),
        )
        for k in range(1, n + 1)
    )


def op_memory_run(plan: Sequence[BaselineRun]) -> str:
    """The timing file of the run that makes op_memory.json: the last unprofiled run (a process without
    nsys, so the PyTorch profiler never meets it), else the profiled one (after its capture range)."""
    return plan[-1].timing if plan else rundir.TIMING


class Reporter(Protocol):
    """Where the driver tells what it does (the CLI draws a progress bar from it)."""

    def phase(self, name: str, description: str, total: int | None) -> None:
        """A phase starts; ``total`` steps (repeats x pages) or None for an open-ended one."""

    def step(self, event: progress.ProgressEvent) -> None:
        """A worker progress event (``page_done`` advances the bar)."""

    def info(self, message: str) -> None:
        """A message for people."""

    def warn(self, message: str) -> None:
        """A warning."""

    def debug(self, message: str) -> None:
        """Verbose detail."""


class NullReporter:
    """A reporter that says nothing."""

    def phase(self, name: str, description: str, total: int | None) -> None:
        pass

    def step(self, event: progress.ProgressEvent) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def debug(self, message: str) -> None:
        pass


@attrs.frozen
class CaptureResult:
    """A finished capture."""

    run_dir: Path
    manifest: RunManifest
    warnings: tuple[str, ...] = ()


# --- checks before anything runs ---------------------------------------------------------------


def gpu_slug(name: str | None) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3`` (``cpu`` for None)."""
    if not name:
        return "cpu"
    text = re.sub(r"^(nvidia|geforce)\s+", "", name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def device_index(device: str) -> int:
    """The GPU index of ``cuda`` / ``cuda:N``."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def check_machine(settings: CaptureSettings, gpu: dict[str, Any]) -> None:
    """Raise EnvironmentProblem if this machine cannot run the worker as asked."""
    if settings.worker_command is None and settings.trust_remote_code:
        from dsocr.execution.vendor import check_attention

        check_attention(settings.attn_implementation or "eager")
    if settings.worker_command is None:
        for package, why in (("torch", "the model"), ("nvtx", "the ranges")):
            if manifest_mod.package_version(package) is None:
                raise EnvironmentProblem(
                    f"capture needs {package} ({why}), which is not installed; pip install 'dsocr[capture]'"
                )
        if importlib.util.find_spec(WORKER_MODULE) is None:
            raise EnvironmentProblem(f"{WORKER_MODULE} is missing from this dsocr install; reinstall dsocr")
        if settings.op_ranges and manifest_mod.torch_cuda_version() is None:
            raise EnvironmentProblem(
                "--op-ranges needs a CUDA build of torch (emit_nvtx raises 'Torch not compiled with CUDA enabled'), "
                f"but torch {manifest_mod.package_version('torch')} is CPU-only: drop --op-ranges or install a CUDA "
                "build of torch"
            )
    if settings.is_cpu:
        return
    if not settings.device.startswith("cuda"):
        raise BadUsage(f"--device {settings.device!r} is unknown; use cuda, cuda:N or cpu")
    if not gpu.get("gpus"):
        raise EnvironmentProblem(
            f"no NVIDIA GPU found ({gpu.get('error') or 'NVML lists none'}); run on a machine with a GPU and its "
            "driver, or pass --device cpu to run the whole pipeline on the CPU under nsys (NVTX ranges, no kernels)"
        )
    if settings.workers > 1:
        wanted = sorted({device_index(d) for d in settings.devices})
        have = len(gpu["gpus"])
        if wanted[-1] >= have:
            names = ", ".join(sorted({str(g.get("name")) for g in gpu["gpus"]}))
            raise EnvironmentProblem(
                f"{settings.workers} workers on GPU(s) {', '.join(map(str, wanted))}, but this machine has "
                f"{have} GPU(s) ({names}); ask for at most {have} (--gpus {have}), or repeat a device (--devices 0,0)"
            )
    index = device_index(settings.device)
    if index >= len(gpu["gpus"]):
        raise BadUsage(f"--device {settings.device}: this machine has {len(gpu['gpus'])} GPU(s); use cuda:0..")
    if settings.worker_command is None and manifest_mod.torch_cuda_version() is None:
        raise EnvironmentProblem(
            f"torch {manifest_mod.package_version('torch')} is a CPU-only build; install a CUDA build of torch "
            "(pytorch.org), or pass --device cpu"
        )


def check_variant_usage(settings: CaptureSettings, pages: int | None) -> None:
    """BadUsage (exit 2, one line) for an impossible variant: graph/compile decode with the checkpoint's code,
    ``--moe loop`` or the CPU; flash attention in the replica; a batch larger than the ``pages`` given."""
    from dsocr.capture.nsys import CUDA_GRAPH_TRACES
    from dsocr.capture.worker_config import check_variant

    if settings.attn == "flash_attention_2" and not settings.trust_remote_code:
        raise BadUsage(
            "--attn flash_attention_2 runs only with --trust-remote-code (the checkpoint's own code): the replica "
            "has eager and sdpa attention"
        )
    if settings.cuda_graph_trace not in CUDA_GRAPH_TRACES:
        raise BadUsage(f"--cuda-graph-trace {settings.cuda_graph_trace!r} is unknown: use node or graph")
    try:
        check_variant(
            settings.decode,
            settings.batch,
            moe=settings.moe,
            device=settings.device,
            vendor=settings.trust_remote_code,
            pages=pages,
        )
    except BadInput as exc:
        raise BadUsage(exc.message) from None


def _check_settings(settings: CaptureSettings) -> None:
    for name in ("repeats", "max_new_tokens", "prompt_tokens"):
        if getattr(settings, name) < 1:
            raise BadUsage(f"--{name.replace('_', '-')} is {getattr(settings, name)}: it must be at least 1")
    for name in ("warmup", "capture_warmup"):
        if getattr(settings, name) < 0:
            raise BadUsage(f"--{name.replace('_', '-')} is {getattr(settings, name)}: it must be 0 or more")
    if settings.baseline_runs < 0:
        raise BadUsage(f"--baseline-runs is {settings.baseline_runs}: it must be 0 or more (0: no unprofiled run)")
    if not settings.profile and settings.baselines < 1:
        raise BadUsage("an unprofiled-only capture needs at least one unprofiled run: give --baseline-runs 1 or more")
    check_variant_usage(settings, pages=None)
    from dsocr.execution.checkpoint_rules import plan_model

    # the checkpoint directory rules, before the run directory exists
    plan_model(settings.model, trust_remote_code=settings.trust_remote_code, random_weights=settings.random_weights)


def preflight(settings: CaptureSettings, pages: Sequence[inputs_mod.InputPage]) -> None:
    """The checks :func:`run_capture` makes on its settings before anything runs (BadUsage, exit 2), for a caller
    that plans several captures (``dsocr whatif run``) and must refuse a bad one before the first runs."""
    _check_settings(settings)
    check_variant_usage(settings, len(pages))
    settings.worker_config(pages, Path(rundir.TIMING), profiled=settings.profile)


def make_run_dir(settings: CaptureSettings, gpu_name: str | None, now: dt.datetime | None = None) -> Path:
    """Create the run directory: ``--out`` as given, else ``runs/<date>-<time>-<gpu>-<mode>``."""
    if settings.out is not None:
        out = settings.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise BadUsage(f"--out {out}: exists and is not a directory; choose another --out")
        if (out / rundir.MANIFEST).exists() or (out / rundir.TRACE_REP).exists():
            raise BadUsage(f"--out {out}: already holds a capture; choose another --out or remove it")
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = settings.runs_dir / f"{stamp}-{'cpu' if settings.is_cpu else gpu_slug(gpu_name)}-{settings.mode}"
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


# --- running the worker ------------------------------------------------------------------------


@attrs.define
class _WorkerRun:
    """What one worker process said."""

    returncode: int = 0
    failed: progress.ProgressEvent | None = None
    tail: deque[str] = attrs.field(factory=lambda: deque(maxlen=40))
    last_event: progress.ProgressEvent | None = None
    finished: bool = False

    @property
    def ok(self) -> bool:
        """Exit code 0, no ``failed`` event, and the ``finished`` event seen."""
        return self.returncode == 0 and self.failed is None and self.finished


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ask a child (and its process group) to stop: SIGINT, then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, _INTERRUPT_GRACE_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def run_worker(command: Sequence[str], env: dict[str, str], log: Path, reporter: Reporter) -> _WorkerRun:
    """Run a worker (or nsys around it), streaming its output to ``log`` and its progress to ``reporter``."""
    result = _WorkerRun()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us alone; we stop the children in order
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                event = progress.parse(line)
                if event is None:
                    if line.strip():
                        result.tail.append(line.rstrip())
                        reporter.debug(line.rstrip())
                    continue
                result.last_event = event
                if event.event == progress.FAILED:
                    result.failed = event
                elif event.event == progress.FINISHED:
                    result.finished = True
                reporter.step(event)
            result.returncode = proc.wait()
        except BaseException:
            _stop(proc)
            raise
    return result


def _what(event: progress.ProgressEvent | None, settings: CaptureSettings) -> str:
    if event is not None and event.get("what"):
        return str(event.get("what"))
    return f"mode {settings.mode}, {settings.max_new_tokens} new tokens, {settings.dtype} on {settings.device}"


def worker_failure(
    run: _WorkerRun, settings: CaptureSettings, label: str, log: Path, under_nsys: bool = False
) -> RunFailed:
    """The one-line error for a worker that failed."""
    text = "\n".join(run.tail)
    oom = (run.failed is not None and run.failed.get("kind") == progress.KIND_OOM) or any(
        p in text for p in _OOM_PATTERNS
    )
    if oom:
        return RunFailed(
            f"{label}: CUDA out of memory while running {_what(run.failed, settings)}; use a smaller --mode, fewer "
            f"--max-new-tokens or a GPU with more free memory (details in {log})"
        )
    if run.failed is not None:
        message = str(run.failed.get("message") or "no message")
        return RunFailed(f"{label} failed while running {_what(run.failed, settings)}: {message} (details in {log})")
    last = run.tail[-1] if run.tail else "no output"
    if run.last_event is None and under_nsys:
        return RunFailed(
            f"nsys profile exited with code {run.returncode} before the worker started ({last[:200]}); see {log}"
        )
    if run.returncode == 0:
        seen = run.last_event.event if run.last_event else "no progress line"
        return RunFailed(f"{label} ended without finishing (last event: {seen}; last line: {last[:200]}); see {log}")
    return RunFailed(f"{label} exited with code {run.returncode} ({last[:200]}); see {log}")


# --- the capture -------------------------------------------------------------------------------


class _Run:
    """A capture in progress: the run directory and its manifest (:class:`RunManifest`), kept consistent."""

    def __init__(self, run_dir: Path, manifest: RunManifest) -> None:
        self.dir = run_dir
        self.manifest = manifest

    def set(self, **changes: Any) -> None:
        """Change manifest fields (written at the next :meth:`save`)."""
        self.manifest = self.manifest.with_(**changes)

    def save(self) -> None:
        self.set(files=tuple(sorted(p.name for p in self.dir.iterdir() if not p.name.startswith("."))))
        manifest_mod.write(self.dir / rundir.MANIFEST, self.manifest)

    def phase(self, name: str) -> None:
        self.set(phase=name)
        self.save()

    def timed(self, name: str, seconds: float) -> None:
        self.manifest = self.manifest.with_phase_time(name, seconds)

    def _timing_run(self, file: str, **changes: Any) -> None:
        if self.manifest.timing is not None:
            self.set(timing=self.manifest.timing.with_run(file, **changes))

    def run_started(self, file: str) -> None:
        """Stamp the start of the worker run writing ``file`` (``timing.runs``)."""
        self._timing_run(file, started=manifest_mod.utc_now())
        self.save()

    def run_finished(self, file: str, seconds: float) -> None:
        """Stamp the end and duration of the worker run writing ``file``."""
        self._timing_run(file, finished=manifest_mod.utc_now(), seconds=round(seconds, 3))

    def finish(self, status: str, failure: dict[str, Any] | None = None) -> None:
        self.set(status=status, failure=failure, finished=manifest_mod.utc_now())
        for junk in self.dir.glob(".*.part.sqlite"):
            junk.unlink()
        shutil.rmtree(self.dir / BARRIER_DIR, ignore_errors=True)
        self.save()


def _timing_runs(plan: Sequence[BaselineRun]) -> tuple[TimingRun, ...]:
    """The manifest's ``timing.runs``: every worker run in execution order (times filled in as they run)."""
    runs = [TimingRun(file=b.timing, role="baseline", position=b.position, k=b.k) for b in plan]
    if any(b.position == UNPROFILED_ONLY for b in plan):
        return tuple(runs)
    at = sum(1 for b in plan if b.position == BEFORE)
    runs.insert(at, TimingRun(file=rundir.TIMING, role="profiled", position=PROFILED, k=None))
    return tuple(runs)


def _run_baseline(run: _Run, settings: CaptureSettings, b: BaselineRun, n: int, total: int, rep: Reporter) -> None:
    """One unprofiled worker run (no nsys) writing ``b.timing``; RunFailed if it fails."""
    run.phase(PHASE_BASELINE)
    where = "" if b.position == UNPROFILED_ONLY else f", {b.position} the profiled run"
    which = f" {b.k}/{n}{where}" if n > 1 else ""
    rep.phase(PHASE_BASELINE, f"unprofiled baseline{which} (no nsys)", total)
    started = time.perf_counter()
    run.run_started(b.timing)
    base = run_worker(_worker_command(settings, run.dir / b.config), _worker_env(), run.dir / BASELINE_LOG, rep)
    seconds = time.perf_counter() - started
    run.run_finished(b.timing, seconds)
    run.timed(PHASE_BASELINE, float((run.manifest.phases or {}).get(PHASE_BASELINE) or 0.0) + seconds)
    if not base.ok:
        label = f"the unprofiled baseline worker{f' ({b.k} of {n}{where})' if n > 1 else ''}"
        raise worker_failure(base, settings, label, run.dir / BASELINE_LOG)
    _merge_timing(settings, run.dir, b.timing)


def calibrate_command(settings: CaptureSettings, out: Path) -> list[str]:
    """``dsocr calibrate`` for the capture's pages and workload, writing ``out``."""
    cmd = [sys.executable, "-m", "dsocr", "calibrate", "--mode", settings.mode, "--crops", settings.crops]
    cmd += ["--prompt-tokens", str(settings.prompt_tokens), "--max-new-tokens", str(settings.max_new_tokens)]
    cmd += ["--device", settings.device, "--dtype", settings.dtype, "--seed", str(settings.seed), "--quiet"]
    cmd += ["--moe", settings.moe]
    for page in settings.pages:
        cmd += ["--pages", str(page)]
    return [*cmd, "--out", str(out)]


def _run_calibration(run: _Run, settings: CaptureSettings, rep: Reporter) -> str | None:
    """Run ``dsocr calibrate`` (no nsys) into the run directory; a warning line if it fails (the capture stands)."""
    run.phase(PHASE_CALIBRATE)
    rep.phase(PHASE_CALIBRATE, "timing each kernel signature alone (dsocr calibrate)", None)
    started = time.perf_counter()
    cmd = calibrate_command(settings, run.dir / rundir.CALIBRATION)
    run.set(commands={**(run.manifest.commands or {}), "calibrate": cmd})
    log = run.dir / CALIBRATE_LOG
    with log.open("w", encoding="utf-8") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env(), check=False)
    run.timed(PHASE_CALIBRATE, time.perf_counter() - started)
    if done.returncode != 0:
        return f"the calibration failed (exit {done.returncode}; see {log}): no calibrated prediction in the report"
    return None


def _worker_command(settings: CaptureSettings, config: Path) -> list[str]:
    """The worker's command (several workers: the launcher starting one per per-worker config)."""
    base = list(settings.worker_command or (sys.executable, "-m", WORKER_MODULE))
    if settings.workers == 1:
        return [*base, "--config", str(config)]
    cmd = [sys.executable, "-m", LAUNCHER_MODULE]
    for k in range(settings.workers):
        cmd += ["--config", str(config.with_name(shards_mod.per_worker(config.name, k)))]
    return [*cmd, "--", *base] if settings.worker_command else cmd


def _write_configs(
    settings: CaptureSettings,
    pages: Sequence[inputs_mod.InputPage],
    run_dir: Path,
    config: str,
    timing: str,
    profiled: bool,
    op_memory_out: Path | None = None,
) -> None:
    """Write the worker config ``config`` (several workers: one per worker, each with its shard of the pages).

    ``op_memory_out``: this run makes op_memory.json (``--op-memory``); of several workers, worker 0 does,
    over its shard of the pages.
    """
    if settings.workers == 1:
        settings.worker_config(pages, run_dir / timing, profiled, op_memory_out).write(run_dir / config)
        return
    barrier = run_dir / BARRIER_DIR / Path(config).stem
    for k, (indices, part) in enumerate(shards_mod.shard(pages, settings.workers)):
        cfg = attrs.evolve(
            settings.worker_config(
                part, run_dir / shards_mod.per_worker(timing, k), profiled, op_memory_out if k == 0 else None
            ),
            device=settings.devices[k],
            rank=k,
            workers=settings.workers,
            page_indices=indices,
            barrier=str(barrier),
        ).validate()
        cfg.write(run_dir / shards_mod.per_worker(config, k))


def _merge_timing(settings: CaptureSettings, run_dir: Path, timing: str) -> None:
    """Several workers: their timing files as one ``timing`` (:func:`dsocr.capture.shards.merge_timing`)."""
    if settings.workers > 1:
        parts = [run_dir / shards_mod.per_worker(timing, k) for k in range(settings.workers)]
        shards_mod.merge_timing(parts, run_dir / timing, settings.devices)


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


#: The files a capture writes into its run directory (besides ``*.json``), checked against its inputs.
_RUN_FILES: Final = (
    rundir.TRACE_REP,
    rundir.TRACE_SQLITE,
    CAPTURE_LOG,
    rundir.REPORT_MD,
    rundir.REPORT_HTML,
    rundir.SUMMARY_MD,
    rundir.RESULTS_SQLITE,
)


def run_capture(
    settings: CaptureSettings,
    reporter: Reporter | None = None,
    analyze: Callable[[Path], None] | None = None,
    command: Sequence[str] | None = None,
) -> CaptureResult:
    """Capture, export, check, baseline, then analyze (``analyze(run_dir)``); see the module doc."""
    rep = reporter or NullReporter()
    _check_settings(settings)
    rep.phase(PHASE_PREPARE, "checking inputs", None)
    pages = inputs_mod.collect(list(settings.pages)) if settings.pages else inputs_mod.default_pages()
    check_variant_usage(settings, pages=len(pages))
    settings.worker_config(pages, Path(rundir.TIMING), profiled=True)  # bad mode/crops/dtype: stop here
    if settings.out is not None:
        refuse_overwrite(
            [settings.out / name for name in _RUN_FILES] + list(settings.out.glob("*.json")),
            [p.path for p in pages],
            "choose another --out or move the page files (dsocr never overwrites an input)",
        )
    gpu: dict[str, Any] = (
        manifest_mod.gpu_environment() if not settings.is_cpu else {"gpus": [], "error": "--device cpu"}
    )
    check_machine(settings, gpu)
    nsys = nsys_mod.find(settings.nsys) if settings.profile else None
    if nsys is not None:
        rep.debug(f"using {nsys.describe()}")
    if nsys is not None and not settings.is_cpu:
        driver_cuda = gpu.get("driver_cuda")
        nsys_mod.check_for_cuda(nsys, manifest_mod.torch_cuda_version() or (str(driver_cuda) if driver_cuda else None))
    gpu_name = None if settings.is_cpu else str(gpu["gpus"][device_index(settings.device)]["name"])
    sharded = shards_mod.shard(pages, settings.workers)  # too few pages for the workers: stop here
    run_dir = make_run_dir(settings, gpu_name)
    env_facts = manifest_mod.environment(gpu)
    nvtx_version = manifest_mod.package_version("nvtx")
    plan = baseline_plan(settings.baselines) if settings.profile else unprofiled_plan(settings.baselines)
    op_memory_by = op_memory_run(plan) if settings.op_memory else None

    def op_memory_out(timing: str) -> Path | None:
        return run_dir / rundir.OP_MEMORY if timing == op_memory_by else None

    if nsys is not None:
        _write_configs(
            settings,
            pages,
            run_dir,
            WORKER_CONFIG,
            rundir.TIMING,
            profiled=True,
            op_memory_out=op_memory_out(rundir.TIMING),
        )
    for b in plan:
        _write_configs(
            settings, pages, run_dir, b.config, b.timing, profiled=False, op_memory_out=op_memory_out(b.timing)
        )
    profile_cmd = (
        nsys_mod.profile_command(
            nsys.path,
            run_dir / TRACE_BASENAME,
            _worker_command(settings, run_dir / WORKER_CONFIG),
            settings.device,
            nsys_mod.profile_options(nsys.path) if not settings.is_cpu else (),
            cuda_graph_trace=settings.cuda_graph_trace,
        )
        if nsys is not None
        else None
    )
    rep_path, sqlite_path = export_mod.run_paths(run_dir)
    settings_json = settings.to_json()
    run = _Run(
        run_dir,
        RunManifest(
            schema_version=manifest_mod.SCHEMA_VERSION,
            kind=MANIFEST_KIND,
            dsocr_version=dsocr.__version__,
            command=tuple(map(str, command if command is not None else sys.argv)),
            cwd=str(Path.cwd()),
            created=manifest_mod.utc_now(),
            finished=None,
            status=manifest_mod.STATUS_RUNNING,
            phase=PHASE_PREPARE,
            failure=None,
            settings=ManifestSettings.from_json(settings_json, "capture settings"),
            workload=manifest_mod.workload_record(settings_json),
            seed=settings.seed,
            model=settings.model,
            gpu=gpu_name,
            inputs=tuple(ManifestInput.from_json(p.to_json(), "capture inputs") for p in pages),
            environment=env_facts,
            nsys=(
                {"path": str(nsys.path), "version": nsys.version.full, "found_via": nsys.found_via} if nsys else None
            ),
            commands={
                "profile": profile_cmd,
                "export": nsys_mod.export_command(nsys.path, rep_path, sqlite_path) if nsys else None,
                "baseline": _worker_command(settings, run_dir / WORKER_CONFIG_BASELINE) if plan else None,
                "profile_env": {"NSYS_NVTX_PROFILER_REGISTER_ONLY": "0"} if settings.is_cpu else {},
            },
            phases={},
            ranges=None,
            timing=ManifestTiming(
                profiled=rundir.TIMING if nsys else None,
                baseline=rundir.TIMING_BASELINE if plan else None,
                baseline_runs=len(plan),
                runs=_timing_runs(plan),
            ),
            op_memory={"file": rundir.OP_MEMORY, "run": op_memory_by} if op_memory_by else None,
            analysis="pending" if settings.analyze and nsys else "skipped",
            warnings=(),
            devices={
                "workers": shards_mod.device_entries(settings.devices, gpu, [i for i, _ in sharded]),
                "sharding": shards_mod.SHARDING,
                "barrier": "the workers open and close the capture range together (dsocr.capture.barrier)",
            }
            if settings.workers > 1
            else None,
            # every field in order; ``devices`` only for a data-parallel capture, ``files`` from the first save
            keys=tuple(k for k in field_keys(RunManifest) if k != "files" and (k != "devices" or settings.workers > 1)),
        ),
    )
    run.save()
    rep.info(f"{RUN_DIR_MESSAGE}{run_dir}")
    warnings: list[str] = []
    try:
        total = settings.repeats * len(pages)
        # 3. unprofiled runs before the profiled pass (an unprofiled-only capture: all of them, and no more)
        for b in plan:
            if b.position in (BEFORE, UNPROFILED_ONLY):
                _run_baseline(run, settings, b, len(plan), total, rep)
        if nsys is None or profile_cmd is None:
            run.set(warnings=tuple(warnings))
            run.finish(manifest_mod.STATUS_COMPLETE)
            return CaptureResult(run_dir=run_dir, manifest=run.manifest, warnings=())
        # 4. profiled pass
        run.phase(PHASE_PROFILE)
        rep.phase(PHASE_PROFILE, f"profiling under nsys {nsys.version}", total)
        started = time.perf_counter()
        run.run_started(rundir.TIMING)
        worker = run_worker(
            profile_cmd, nsys_mod.profile_env(settings.device, _worker_env()), run_dir / CAPTURE_LOG, rep
        )
        run.run_finished(rundir.TIMING, time.perf_counter() - started)
        run.timed(PHASE_PROFILE, time.perf_counter() - started)
        if not worker.ok:
            raise worker_failure(
                worker, settings, "the profiled worker (under nsys)", run_dir / CAPTURE_LOG, under_nsys=True
            )
        _merge_timing(settings, run_dir, rundir.TIMING)
        if not rep_path.is_file():
            if list(run_dir.glob("*.qdstrm")):
                raise RunFailed(
                    f"nsys left {TRACE_BASENAME}.qdstrm but no {rundir.TRACE_REP} in {run_dir}: its QdstrmImporter "
                    "could not run (missing libssh.so, libpfm.so.4 or libdw.so.1: put them on LD_LIBRARY_PATH)"
                )
            raise RunFailed(f"nsys wrote no {rundir.TRACE_REP} in {run_dir}; see {run_dir / CAPTURE_LOG}")
        # 5. export and check
        run.phase(PHASE_EXPORT)
        rep.phase(PHASE_EXPORT, "exporting the trace to SQLite", None)
        with export_mod.exported(nsys.path, rep_path, sqlite_path) as (part, seconds):
            run.timed(PHASE_EXPORT, seconds)
            found = export_mod.counted(part, sqlite_path, rep_path)
            run.set(ranges={"dsocr": found.counts, "kernels": found.kernels})
            try:
                warnings += export_mod.check_ranges(
                    found,
                    sqlite_path,
                    nsys.version,
                    nvtx_version,
                    settings.repeats,
                    len(pages),
                    settings.device,
                    workers=settings.workers,
                )
            finally:  # a first export replaces nothing: kept, also without ranges, to look at
                export_mod.install(part, sqlite_path)
        # 6. unprofiled runs after it
        for b in plan:
            if b.position == AFTER:
                _run_baseline(run, settings, b, len(plan), total, rep)
        # 7. each kernel signature timed alone (GPU runs)
        if settings.calibrates:
            failed = _run_calibration(run, settings, rep)
            if failed:
                warnings.append(failed)
        run.set(warnings=tuple(warnings))
        run.finish(manifest_mod.STATUS_COMPLETE)
    except KeyboardInterrupt:
        run.finish(manifest_mod.STATUS_INTERRUPTED, {"phase": run.manifest.phase, "message": "Ctrl-C"})
        raise
    except DsocrError as exc:
        run.finish(manifest_mod.STATUS_FAILED, {"phase": run.manifest.phase, "message": exc.message})
        raise
    except Exception as exc:
        run.finish(manifest_mod.STATUS_FAILED, {"phase": run.manifest.phase, "message": f"internal: {exc!r}"})
        raise
    for w in warnings:
        rep.warn(w)
    # 7. analysis (the capture is complete whatever happens here)
    if settings.analyze and analyze is not None:
        rep.phase(PHASE_ANALYZE, "analyzing", None)
        started = time.perf_counter()
        try:
            analyze(run_dir)
        except KeyboardInterrupt:
            run.set(analysis="interrupted")
            run.save()
            raise
        except DsocrError as exc:
            run.set(analysis=f"failed: {exc.message}")
            run.save()
            raise
        run.timed(PHASE_ANALYZE, time.perf_counter() - started)
        run.set(analysis="done")
        run.save()
    return CaptureResult(run_dir=run_dir, manifest=run.manifest, warnings=tuple(warnings))


def export_run(run_dir: Path, nsys_path: Path | None = None, reporter: Reporter | None = None) -> Path:
    """``dsocr export RUN_DIR``: (re-)export a run's ``trace.nsys-rep`` to ``trace.sqlite`` and check it.

    The new export is checked (readable, holds the ``dsocr`` ranges) before it replaces ``trace.sqlite``;
    the trace and the manifest's range counts and status then change together. A failed check leaves both
    as they were.
    """
    rep = reporter or NullReporter()
    if not run_dir.exists():
        raise BadInput(f"{run_dir}: no such run directory; pass a directory made by `dsocr capture`")
    rep_path, sqlite_path = (
        export_mod.run_paths(run_dir) if run_dir.is_dir() else (run_dir, run_dir.with_suffix(".sqlite"))
    )
    if not os.path.lexists(rep_path):
        raise InputNotFound(f"{rep_path}: no such nsys report; capture again with `dsocr capture`")
    check_input(rep_path, "capture again with `dsocr capture`", directory_ok=False)
    refuse_overwrite([sqlite_path], [rep_path], f"move {rep_path} elsewhere and export it from there")
    target_dir = rep_path.parent
    manifest_path = target_dir / rundir.MANIFEST
    try:
        manifest, problem = read_manifest(manifest_path)
    except BadInput as exc:  # a field of the wrong type: the export still runs, the manifest stays as it is
        manifest, problem = None, exc.message
    if problem is not None:
        rep.warn(f"{problem}: left as it is (the export's range counts are not recorded in it)")
    manifest = manifest if manifest is not None and manifest.keys else None  # {} records nothing
    explicit = nsys_path
    nsys_facts = manifest.nsys if manifest is not None else None
    recorded = Path(str(nsys_facts.get("path", ""))) if nsys_facts else None
    if explicit is None and recorded is not None and recorded.is_file() and not os.environ.get("NSYS"):
        explicit = recorded
    nsys = nsys_mod.find(explicit)
    rep.phase(PHASE_EXPORT, f"exporting {rep_path.name} with nsys {nsys.version}", None)
    had_trace = sqlite_path.exists()
    kept = f"; {sqlite_path.name} and {rundir.MANIFEST} were left as they were" if had_trace else ""
    with export_mod.exported(nsys.path, rep_path, sqlite_path) as (part, seconds):
        settings = (manifest.settings if manifest is not None else None) or ManifestSettings(keys=())
        try:
            found = export_mod.counted(part, sqlite_path, rep_path)
            warnings = export_mod.check_ranges(
                found,
                sqlite_path,
                nsys.version,
                manifest_mod.package_version("nvtx"),
                int(settings.repeats or 0),
                len((manifest.inputs if manifest is not None else None) or ()),
                str(settings.device if settings.has("device") else "cuda"),
                workers=max(1, len(settings.devices or ())),  # a data-parallel capture: one repeat range each
            )
        except RunFailed as exc:
            if not had_trace:  # nothing to lose: kept to look at, as a capture keeps it
                export_mod.install(part, sqlite_path)
            said = exc.message.replace(f"{sqlite_path}: the trace holds", f"{sqlite_path}: the new export holds", 1)
            raise RunFailed(said + kept) from None
        with atomic.signals_held():
            if manifest is not None:
                recorded_export = _record_export(manifest, found, seconds, warnings, sqlite_path)
                with atomic.atomic_path(manifest_path) as tmp:
                    manifest_mod.write_to(tmp, recorded_export)
                    export_mod.install(part, sqlite_path)
            else:
                export_mod.install(part, sqlite_path)
    for w in warnings:
        rep.warn(w)
    return sqlite_path


def _record_export(
    manifest: RunManifest, found: export_mod.RangeCounts, seconds: float, warnings: list[str], sqlite: Path
) -> RunManifest:
    """The manifest after a checked re-export: its range counts, export time, warnings, files and status."""
    m = manifest.with_(ranges={"dsocr": found.counts, "kernels": found.kernels}).with_phase_time(PHASE_EXPORT, seconds)
    failure = m.failure or {}
    if m.status == manifest_mod.STATUS_FAILED and failure.get("phase") == PHASE_EXPORT:
        settings = m.settings or ManifestSettings(keys=())
        wanted = (settings.baseline_runs if settings.has("baseline_runs") else 1) if settings.baseline else 0
        status = manifest_mod.STATUS_COMPLETE if not wanted else manifest_mod.STATUS_FAILED
        m = m.with_(
            status=status,
            failure=None
            if status == manifest_mod.STATUS_COMPLETE
            else {
                "phase": PHASE_BASELINE,
                "message": "exported by `dsocr export`; the baseline after the profiled run never ran",
            },
        )
    names = {p.name for p in sqlite.parent.iterdir() if not p.name.startswith(".")}
    return m.with_(warnings=(*(m.warnings or ()), *warnings), files=tuple(sorted(names | {sqlite.name})))
