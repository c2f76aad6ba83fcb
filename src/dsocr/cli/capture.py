"""``dsocr capture``: run DeepSeek-OCR under Nsight Systems, export, baseline, analyze."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dsocr.cli._values import (
    capture_attn_value,
    crops_value,
    cuda_graph_trace_value,
    decode_value,
    device_value,
    dtype_value,
    mode_value,
    moe_value,
    workload_value,
)
from dsocr.cli.app import app
from dsocr.cli.common import Interrupted, JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_dir, option
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, BadUsage, EnvironmentProblem


def _opt(name: str, help_text: str, *, hidden: bool = False, short: str | None = None, **kwargs: Any) -> Any:
    """An option with the convention's variable: ``DSOCR_<NAME>``, or ``DSOCR_CAPTURE_<NAME>`` for --out etc.

    ``kwargs`` check the value (``min=``, ``callback=``): a bad one is a usage error, exit 2.
    """
    decls = [name, short] if short else [name]
    return option("capture", *decls, help=help_text, hidden=hidden, **kwargs)


#: The analytic model's dtype names (shared through DSOCR_DTYPE) -> torch's.
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def parse_shrink(value: str | None) -> Any:
    """``SAM,CLIP,DECODER[,VOCAB[,EXPERTS]]`` layer counts -> a worker Shrink (None when not given)."""
    if not value:
        return None
    from dsocr.capture.worker_config import Shrink

    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if not 3 <= len(numbers) <= 5 or any(n < 1 for n in numbers):
        raise BadUsage(
            f"--shrink {value!r}: give SAM,CLIP,DECODER layer counts, optionally VOCAB and EXPERTS (e.g. 2,2,2,1024,8)"
        )
    extra: list[int | None] = [*numbers[3:], None, None]
    return Shrink(numbers[0], numbers[1], numbers[2], extra[0], extra[1])


class RichReporter:
    """The driver's reporter on stderr: one row per phase and worker sub-phase, a bar over repeats x pages."""

    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self._progress: Any = None
        self._task: Any = None
        self._phase = ""
        self._label = ""
        self._counts: dict[str, int] = {}
        self.run_dir: str | None = None

    def __enter__(self) -> RichReporter:
        if self.ui.show_progress:
            self._progress = self.ui.progress_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._close()
            self._progress.stop()

    def _close(self) -> None:
        """Mark the current phase finished (an open-ended one as 1/1) and stop its clock."""
        if self._task is None:
            return
        task = next(t for t in self._progress.tasks if t.id == self._task)
        done = max(int(task.completed), 1) if task.total is None else int(task.total)
        self._progress.update(self._task, total=done, completed=done)
        self._progress.stop_task(self._task)

    def phase(self, name: str, description: str, total: int | None) -> None:
        from dsocr.capture.driver import PHASE_BASELINE, PHASE_PROFILE

        self._phase, self._label, self._counts = name, description, {}
        if self._progress is None:
            self.ui.debug(f"{name}: {description}")
            return
        # a worker phase's row waits for the worker's sub-phases (inputs, model, warm-up, repeats x pages)
        self._add(description, None if name in (PHASE_PROFILE, PHASE_BASELINE) else total)

    def _add(self, description: str, total: int | None) -> None:
        self._close()
        self._task = self._progress.add_task(description, total=total)

    def step(self, event: Any) -> None:
        from dsocr.capture import progress
        from dsocr.capture.driver import PHASE_PROFILE

        if event.event == progress.PAGE_DONE:
            if self._progress is not None and self._task is not None:
                self._progress.advance(self._task)
            return
        self.ui.debug(f"worker: {event.event} {json.dumps(event.fields)}")
        sub = progress.worker_step(event, self._counts, profiled=self._phase == PHASE_PROFILE)
        if sub is not None and self._progress is not None:
            self._add(f"{self._label}: {sub[0]}", sub[1])

    def info(self, message: str) -> None:
        from dsocr.capture.driver import RUN_DIR_MESSAGE

        if message.startswith(RUN_DIR_MESSAGE):
            self.run_dir = message[len(RUN_DIR_MESSAGE) :]
        self.ui.info(message)

    def warn(self, message: str) -> None:
        self.ui.warn(message)

    def debug(self, message: str) -> None:
        self.ui.debug(message)


def _analyze_into(run_dir: Path, context: str = "auto") -> None:
    """Run ``dsocr analyze RUN_DIR --out RUN_DIR`` quietly (report files beside the trace), with the
    decode ``context`` of ``DSOCR_CONTEXT`` (the one analyze option a capture's own analysis honours)."""
    try:
        import polars  # noqa: F401  (the analyzer's one heavy dependency)

        from dsocr.cli.analyze import analyze
    except ImportError as exc:
        raise EnvironmentProblem(
            f"{run_dir}: the capture is complete but the analyzer cannot run here ({exc}); pip install polars, "
            f"or copy the run directory and run `dsocr analyze {run_dir}` elsewhere"
        ) from exc
    analyze(traces=[run_dir], out=run_dir, json_out=False, quiet=True, verbose=False, context=context)


def _context_from_env() -> str:
    """``DSOCR_CONTEXT`` checked before anything runs (a bad value is a usage error, never ignored)."""
    import os

    from dsocr.analytic.workload import parse_context

    value = os.environ.get("DSOCR_CONTEXT")
    if not value:
        return "auto"
    try:
        return str(parse_context(value))
    except BadInput as exc:
        raise BadUsage(f"DSOCR_CONTEXT (the analysis's decode context): {exc.message}") from None


@app.command()
def capture(
    workload: Annotated[
        str | None,
        _opt(
            "--workload",
            "Named workload: dsocr-standard-v1 (12 standard pages, gundam, 512 new tokens, 3 repeats) or "
            "dsocr-quick-v1 (the same with 32 new tokens: the defaults). A workload flag that contradicts it "
            "is refused.",
            callback=workload_value,
        ),
    ] = None,
    repeats: Annotated[
        int | None, _opt("--repeats", "Captured passes over all pages (default: the workload's, 3).", short="-r", min=1)
    ] = None,
    pages: Annotated[
        list[Path] | None,
        _opt(
            "--pages",
            "Page images (PNG, JPEG, TIFF, WebP), PDFs (each page one input) or directories; repeatable. "
            "Default: the shipped 12-page standard set (`dsocr pages`).",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        _opt(
            "--mode",
            "Resolution mode: tiny, small, base, large, gundam, gundam-m (default: the workload's, gundam).",
            callback=mode_value,
        ),
    ] = None,
    crops: Annotated[
        str | None,
        _opt("--crops", "Crop grid: auto (the vendor's choice, the default), none, or WxH.", callback=crops_value),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        _opt(
            "--max-new-tokens",
            "Tokens generated per page (1 from prefill + N-1 decode steps; default: the workload's, 32).",
            min=1,
        ),
    ] = None,
    prompt_tokens: Annotated[
        int | None,
        _opt("--prompt-tokens", "Text prompt length in tokens (fixed ids: no tokenizer offline; default 12).", min=1),
    ] = None,
    warmup: Annotated[int, _opt("--warmup", "Warm-up rounds before the capture range opens.", min=0)] = 2,
    capture_warmup: Annotated[
        int,
        _opt(
            "--capture-warmup",
            "Untimed passes over all pages right after the capture range opens (they take the tracer's "
            "start-up cost off the first repeat; the baselines run them too); 0 none.",
            min=0,
        ),
    ] = 1,
    model: Annotated[
        str,
        _opt(
            "--model",
            "'replica' (exact shapes, random weights), a checkpoint dir, or a hub id in the local Hugging Face "
            "cache (deepseek-ai/DeepSeek-OCR; never downloaded).",
        ),
    ] = "replica",
    trust_remote_code: Annotated[
        bool, _opt("--trust-remote-code", "Run the checkpoint's own code and generate (transformers 4.46.3).")
    ] = False,
    random_weights: Annotated[
        bool, _opt("--random-weights", "Run a checkpoint dir's config with seeded random weights (no safetensors).")
    ] = False,
    attn: Annotated[
        str | None,
        _opt(
            "--attn",
            "Attention: eager (default: the vendor's math) or sdpa (faster variant) for the replica; eager (default) "
            "or flash_attention_2 for --trust-remote-code.",
            callback=capture_attn_value,
        ),
    ] = None,
    moe: Annotated[
        str,
        _opt(
            "--moe",
            "The replica's MoE execution: loop (the vendor's: per-expert GEMMs, a host sync per MoE layer; "
            "default) or grouped (grouped GEMMs, no host sync).",
            callback=moe_value,
        ),
    ] = "loop",
    decode: Annotated[
        str,
        _opt(
            "--decode",
            "Decode: eager (default: dynamic KV cache, step by step), graph (static KV cache, one CUDA graph of a "
            "step replayed) or compile (the static step under torch.compile reduce-overhead); graph and compile "
            "need --moe grouped and CUDA (docs/variants.md).",
            callback=decode_value,
        ),
    ] = "eager",
    batch: Annotated[
        int,
        _opt(
            "--batch",
            "Pages per forward, bucketed by crop grid (a grid with fewer pages runs a smaller batch; default 1).",
            min=1,
        ),
    ] = 1,
    cuda_graph_trace: Annotated[
        str,
        _opt(
            "--cuda-graph-trace",
            "nsys --cuda-graph-trace: node (every kernel of a replayed graph; default) or graph (one range per "
            "graph launch, cheaper).",
            callback=cuda_graph_trace_value,
        ),
    ] = "node",
    device: Annotated[
        str, _opt("--device", "cuda, cuda:N, or cpu (the whole pipeline on the CPU).", callback=device_value)
    ] = "cuda",
    gpus: Annotated[
        int | None,
        _opt("--gpus", "Data-parallel: N workers on GPUs 0..N-1 in one nsys session, pages round-robin.", min=1),
    ] = None,
    devices: Annotated[
        str | None,
        _opt("--devices", "Data-parallel: one worker per listed device (0,1 / 0,0 repeats one GPU / cpu,cpu)."),
    ] = None,
    dtype: Annotated[
        str,
        _opt(
            "--dtype",
            "auto (bf16 on CUDA, fp32 on CPU), bfloat16 (bf16), float16 (fp16), float32 (fp32).",
            callback=dtype_value,
        ),
    ] = "auto",
    op_ranges: Annotated[
        bool, _opt("--op-ranges", "aten operator ranges (emit_nvtx, record_shapes) for operator tables.")
    ] = False,
    module_ranges: Annotated[bool, _opt("--module-ranges", "One NVTX range per module (domain dsocr.module).")] = False,
    op_memory: Annotated[
        bool,
        _opt(
            "--op-memory",
            "One extra pass under the PyTorch profiler (profile_memory) after the capture: the allocator's bytes "
            "per operator and stage, and each stage's peak, into op_memory.json for the reports.",
        ),
    ] = False,
    no_baseline: Annotated[
        bool, _opt("--no-baseline", "Skip the unprofiled pass (no profiler-overhead figures).")
    ] = False,
    baseline_runs: Annotated[
        int,
        _opt(
            "--baseline-runs",
            "Unprofiled passes: 2 runs one before and one after the profiled pass (the report shows their drift "
            "beside the profiler overhead); 1 after only; more alternate; 0 none.",
            min=0,
        ),
    ] = 2,
    no_analyze: Annotated[bool, _opt("--no-analyze", "Capture and export only; no report.")] = False,
    calibrate: Annotated[
        bool | None,
        typer.Option(
            "--calibrate/--no-calibrate",
            envvar="DSOCR_CALIBRATE",
            show_envvar=True,
            help="Time every kernel signature alone (dsocr calibrate) into calibration.json for the calibrated "
            "prediction (default: on with a GPU, off with --device cpu).",
        ),
    ] = None,
    nsys: Annotated[Path | None, _opt("--nsys", "The nsys executable (or its directory) to use.")] = None,
    out: Annotated[Path | None, _opt("--out", "Run directory (default: RUNS_DIR/<date>-<time>-<gpu>-<mode>).")] = (
        None
    ),
    runs_dir: Annotated[Path, _opt("--runs-dir", "Where run directories are created.")] = Path(rundir.RUNS_DIR),
    seed: Annotated[int, _opt("--seed", "Seed of the replica's random weights.")] = 0,
    shrink: Annotated[
        str | None,
        _opt("--shrink", "Tests: SAM,CLIP,DECODER[,VOCAB[,EXPERTS]] layer counts.", hidden=True),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Capture DeepSeek-OCR under Nsight Systems: trace, SQLite export, unprofiled baseline, manifest, report."""
    from functools import partial

    from dsocr.capture.driver import CaptureSettings, run_capture
    from dsocr.capture.shards import resolve_devices
    from dsocr.model.workloads import resolve

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    context = _context_from_env()
    given = {
        "pages": tuple(pages or ()),
        "mode": mode,
        "crops": crops,
        "max_new_tokens": max_new_tokens,
        "prompt_tokens": prompt_tokens,
        "repeats": repeats,
    }
    try:
        fixed, _ = resolve(workload, given)
    except BadInput as exc:
        raise BadUsage(exc.message) from None
    device, workers = resolve_devices(device, gpus, devices)
    check_out_dir(out or runs_dir, "--out" if out is not None else "--runs-dir")
    settings = CaptureSettings(
        repeats=fixed["repeats"],
        pages=fixed["pages"],
        mode=fixed["mode"],
        crops=fixed["crops"],
        max_new_tokens=fixed["max_new_tokens"],
        prompt_tokens=fixed["prompt_tokens"],
        workload=workload,
        warmup=warmup,
        capture_warmup=capture_warmup,
        model=model,
        trust_remote_code=trust_remote_code,
        random_weights=random_weights,
        attn=attn,
        moe=moe,
        decode=decode,
        batch=batch,
        cuda_graph_trace=cuda_graph_trace,
        device=device,
        dtype=_DTYPE_ALIASES.get(dtype.strip().lower(), dtype),
        op_ranges=op_ranges,
        module_ranges=module_ranges,
        op_memory=op_memory,
        baseline=not no_baseline,
        baseline_runs=baseline_runs,
        analyze=not no_analyze,
        calibrate=calibrate,
        nsys=nsys,
        out=out,
        runs_dir=runs_dir,
        seed=seed,
        shrink=parse_shrink(shrink),
        devices=workers,
    )
    reporter = RichReporter(ui)
    try:
        with reporter:
            result = run_capture(
                settings,
                reporter=reporter,
                analyze=partial(_analyze_into, context=context),
                command=["dsocr", *sys.argv[1:]],
            )
    except KeyboardInterrupt:
        kept = f"{reporter.run_dir} keeps what was captured (manifest status: interrupted)" if reporter.run_dir else ""
        raise Interrupted(kept) from None
    if json_out:
        print(
            json.dumps({"run_dir": str(result.run_dir), "manifest": result.manifest.to_json()}, indent=2, default=str)
        )
    elif not quiet:
        ui.out.print(str(result.run_dir), markup=False)
