"""``dsocr calibrate``: time every kernel signature of the pages' workloads alone (calibration.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dsocr.cli._values import crops_value, dtype_value, mode_value, moe_value
from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_file, option
from dsocr.contract.errors import BadInput, BadUsage, EnvironmentProblem, RunFailed
from dsocr.contract.paths import refuse_overwrite

if TYPE_CHECKING:
    from dsocr.analytic.signature import Kernel
    from dsocr.analytic.workload import Workload
    from dsocr.model.architecture import Architecture


def _opt(name: str, help_text: str, *aliases: str, **kwargs: Any) -> Any:
    return option("calibrate", name, *aliases, help=help_text, **kwargs)


def _device_value(value: str | None) -> str | None:
    if value is None:
        return value
    v = value.strip().lower()
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return value
    raise typer.BadParameter(f"{value!r} is not a device: use auto, cuda, cuda:N (N a GPU index) or cpu")


def workloads(
    pages: list[Path] | None, mode: str, crops: str, prompt_tokens: int, max_new_tokens: int, dtype: str
) -> tuple[list[Workload], list[str]]:
    """One workload per distinct crop grid of the pages (as capture picks the grid), and the page names."""
    from dsocr.analytic.workload import Workload
    from dsocr.capture.inputs import collect, default_pages
    from dsocr.execution.preprocess import resolve_grid

    inputs = collect(pages) if pages else default_pages()
    grids: dict[tuple[int, int], None] = {}
    for page in inputs:
        grids.setdefault(resolve_grid(page.width, page.height, mode, crops), None)
    out = [
        Workload(
            mode=mode, crop_grid=g, prompt_tokens=prompt_tokens, new_tokens=max_new_tokens, dtype=dtype
        ).validated()
        for g in grids
    ]
    return out, [p.name for p in inputs]


def signatures(workloads: list[Workload], arch: Architecture) -> list[Kernel]:
    """The distinct kernel signatures of the workloads' analytic estimates."""
    from dsocr.analytic.calibration import required_kernels
    from dsocr.analytic.workload import estimate

    return required_kernels(estimate(w, arch) for w in workloads)


def _check_out(out: Path) -> None:
    """Fail before measuring when ``out`` names a directory (USAGE) or cannot be written (ENVIRONMENT)."""
    check_out_file(out, "calibration.json")
    parent = out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise EnvironmentProblem(
            f"{out}: cannot write there ({existing} is not a writable directory); choose another --out"
        )


class _Progress:
    """A rich bar over the signatures on stderr (nothing with --quiet/--json or off a terminal)."""

    def __init__(self, ui: Ui, total: int) -> None:
        self.ui, self.total = ui, total
        self._progress: Any = None
        self._task: Any = None
        self.failed = 0

    def __enter__(self) -> _Progress:
        if self.ui.show_progress:
            self._progress = self.ui.progress_bar()
            self._task = self._progress.add_task("calibrating", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description="calibrated")
            self._progress.stop()

    def start(self, index: int, kernel: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"calibrating {kernel.key}")
        self.ui.debug(f"{index + 1}/{self.total} {kernel.key}")

    def done(self, index: int, result: Any) -> None:
        if result.error is not None:
            self.failed += 1
            self.ui.warn(f"{result.kernel.key}: {result.error}")
        if self._progress is not None:
            self._progress.advance(self._task)


@app.command()
def calibrate(
    pages: Annotated[
        list[Path] | None,
        _opt(
            "--pages",
            "Page images, PDFs or directories whose workloads are calibrated (as capture takes them); repeatable. "
            "Default: the shipped 12-page standard set.",
        ),
    ] = None,
    mode: Annotated[
        str, _opt("--mode", "Resolution mode: tiny, small, base, large, gundam, gundam-m.", callback=mode_value)
    ] = "gundam",
    crops: Annotated[
        str, _opt("--crops", "Crop grid: auto (the vendor's choice), none, or WxH.", callback=crops_value)
    ] = "auto",
    prompt_tokens: Annotated[int, _opt("--prompt-tokens", "Text prompt length in tokens.", min=1)] = 12,
    max_new_tokens: Annotated[
        int, _opt("--max-new-tokens", "Tokens generated per page (1 from prefill + N-1 decode steps).", min=1)
    ] = 32,
    device: Annotated[
        str | None,
        _opt(
            "--device",
            "auto (default: CUDA if there is a GPU, else the CPU with a warning), cuda, cuda:N or cpu.",
            callback=_device_value,
        ),
    ] = None,
    dtype: Annotated[
        str,
        _opt("--dtype", "auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32 (or torch's names).", callback=dtype_value),
    ] = "auto",
    moe: Annotated[
        str,
        _opt(
            "--moe",
            "The replica's MoE execution the routed experts are timed in: loop (the vendor's, default) or grouped.",
            callback=moe_value,
        ),
    ] = "loop",
    iterations: Annotated[int, _opt("--iterations", "Timed runs per signature (median, min, max).", min=1)] = 20,
    warmup_runs: Annotated[int, _opt("--warmup-runs", "Untimed runs per signature before timing.", min=0)] = 3,
    l2_flush_mb: Annotated[
        int | None,
        _opt(
            "--l2-flush-mb",
            "MiB written before each timed run to flush the cache (default 256 on CUDA, at least twice the L2; "
            "32 on the CPU; 0 = no flush).",
            min=0,
        ),
    ] = None,
    smoke: Annotated[
        bool,
        _opt("--smoke", "Smoke test: a narrow, shallow model (tiny shapes); the times are not for predictions."),
    ] = False,
    seed: Annotated[int, _opt("--seed", "Seed of the random inputs and weights.")] = 0,
    out: Annotated[Path, _opt("--out", "Calibration file to write (atomically).", "-o")] = Path("calibration.json"),
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Time every analytic kernel signature of the pages' workloads alone on the GPU (L2 flushed before each run)."""
    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    from dsocr.model.architecture import DEEPSEEK_OCR
    from dsocr.model.modes import check_grid, parse_grid

    try:
        import torch  # noqa: F401  (the one heavy dependency)
    except ImportError as exc:
        raise EnvironmentProblem(f"dsocr calibrate needs torch ({exc}); pip install 'dsocr[capture]'") from None
    from dsocr.capture import calibrate as cal
    from dsocr.contract.atomic import write_text
    from dsocr.execution.replica import resolve_dtype

    _check_out(out)
    dev = cal.resolve_device(device or "auto")
    if (device or "auto").strip().lower() == "auto" and dev.type == "cpu":
        ui.warn("no CUDA GPU here: calibrating on the CPU (CPU times, not GPU times; use --device cpu to silence)")
    torch_dtype = resolve_dtype(str(dev), dtype.strip().lower())
    arch = cal.SMOKE_ARCH if smoke else DEEPSEEK_OCR
    if crops.strip().lower() not in ("auto", "none"):
        try:
            check_grid(mode, parse_grid(crops))
        except BadInput as exc:
            raise BadUsage(f"--crops {crops}: {exc.message}") from None
    loads, page_names = workloads(pages, mode, crops, prompt_tokens, max_new_tokens, cal.dtype_name(torch_dtype))
    if pages:
        given = [f for p in pages for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
        refuse_overwrite([out], given, "choose another --out (dsocr never overwrites an input)")
    kernels = signatures(loads, arch)
    ui.info(f"{len(kernels)} kernel signatures from {len(page_names)} pages ({len(loads)} crop grids) on {dev}")
    with _Progress(ui, len(kernels)) as bar:
        results, method = cal.measure(
            kernels,
            device=dev,
            dtype=torch_dtype,
            iterations=iterations,
            warmup=warmup_runs,
            l2_flush_bytes=None if l2_flush_mb is None else l2_flush_mb << 20,
            seed=seed,
            on_start=bar.start,
            on_done=bar.done,
            moe=moe,
        )
    extra = {
        "workload": {
            "arch": arch.name,
            "smoke": smoke,
            "mode": mode,
            "crop_grids": [list(w.crop_grid) for w in loads],
            "pages": page_names,
            "prompt_tokens": prompt_tokens,
            "max_new_tokens": max_new_tokens,
            "moe": moe,
            "seed": seed,
        }
    }
    doc = cal.calibration_document(results, method, device=dev, dtype=torch_dtype, extra=extra)
    write_text(out, doc.text())
    failed = sum(1 for r in results if r.error is not None)
    if failed:
        ui.warn(f"{failed} of {len(results)} signatures failed (their errors are in {out})")
    if json_out:
        typer.echo(json.dumps(doc.to_json(), indent=2))
    elif not quiet:
        ui.info(f"wrote {len(results) - failed} calibrated signatures to {out}")
        ui.out.print(str(out), markup=False)
    if results and failed == len(results):
        raise RunFailed(f"{out}: every signature failed (first: {results[0].error}); see the file for each error")
