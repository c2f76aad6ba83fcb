"""``dsocr model``: the analytic FLOPs/bytes/memory model for a workload, no GPU needed."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt
from dsocr.contract.errors import BadInput, ExitCode


class Format(str, Enum):
    """Output formats."""

    md = "md"
    json = "json"


class AttnChoice(str, Enum):
    """Attention implementations the model can assume."""

    sdpa = "sdpa"
    eager = "eager"


class LogitsChoice(str, Enum):
    """Where prefill computes logits."""

    last = "last"
    all = "all"


def _opt(name: str, env: str, help_text: str, *aliases: str) -> Any:
    return typer.Option(name, *aliases, envvar=f"DSOCR_{env}", show_envvar=True, help=help_text)


@app.command()
def model(
    mode: Annotated[str, _opt("--mode", "MODE", "Resolution mode: tiny, small, base, large, gundam, gundam-m.")] = (
        "gundam"
    ),
    crops: Annotated[
        str | None,
        _opt(
            "--crops",
            "CROPS",
            "Crop grid WxH (e.g. 2x2, 3x1; 'none' for no crops). Default (or 'auto') for gundam/gundam-m "
            "without --image-size: 2x2.",
        ),
    ] = None,
    image_size: Annotated[
        str | None,
        _opt("--image-size", "IMAGE_SIZE", "Image size WxH in pixels: the crop grid the vendor's rule picks for it."),
    ] = None,
    prompt_tokens: Annotated[
        int, _opt("--prompt-tokens", "PROMPT_TOKENS", "Text tokens in the prompt (prefill = image + these).")
    ] = 12,
    new_tokens: Annotated[
        int, _opt("--new-tokens", "NEW_TOKENS", "Generated tokens: the first from prefill, then N-1 decode steps.")
    ] = 128,
    context: Annotated[
        str,
        _opt(
            "--context",
            "CONTEXT",
            "Decode context per step: auto (real length), max (the 8192 window) or fixed:N.",
        ),
    ] = "auto",
    batch: Annotated[int, _opt("--batch", "BATCH", "Pages processed together.")] = 1,
    dtype: Annotated[str, _opt("--dtype", "DTYPE", "Compute dtype: bf16, fp16, fp32.")] = "bf16",
    attn: Annotated[
        AttnChoice, _opt("--attn", "ATTN", "Attention implementation assumed (eager materializes the scores).")
    ] = AttnChoice.sdpa,
    prefill_logits: Annotated[
        LogitsChoice, _opt("--prefill-logits", "PREFILL_LOGITS", "lm_head in prefill on the last position or all.")
    ] = LogitsChoice.last,
    gpu: Annotated[
        str | None,
        _opt("--gpu", "GPU", "GPU name as CUDA reports it (e.g. 'NVIDIA H100 80GB HBM3'): adds roofline times."),
    ] = None,
    peak_tflops: Annotated[
        float | None, _opt("--peak-tflops", "PEAK_TFLOPS", "Dense tensor peak TFLOP/s (overrides the table).")
    ] = None,
    peak_tbps: Annotated[
        float | None, _opt("--peak-tbps", "PEAK_TBPS", "Memory bandwidth TB/s (overrides the table).")
    ] = None,
    fmt: Annotated[Format, _opt("--format", "MODEL_FORMAT", "Output format.", "-f")] = Format.md,
    depth: Annotated[
        int | None, _opt("--depth", "MODEL_DEPTH", "Markdown: show modules down to this depth (0 = top level).")
    ] = None,
    out: Annotated[
        Path | None, _opt("--out", "MODEL_OUT", "Write to this file (atomically) instead of stdout.", "-o")
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """FLOPs, bytes, parameters and memory per stage and module for a workload (e.g. --mode gundam --crops 2x2)."""
    from dsocr.analytic.export import to_json, to_markdown
    from dsocr.analytic.peaks import resolve_peak
    from dsocr.analytic.workload import Workload, estimate, parse_context
    from dsocr.contract.atomic import write_text
    from dsocr.model.modes import NO_CROPS, get_mode, parse_grid, parse_size, select_crop_grid

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    try:
        m = get_mode(mode)
        if crops is not None and crops.strip().lower() == "auto":
            crops = None  # as capture's --crops auto: the grid follows the image (2x2 without one)
        if crops is not None and image_size is not None:
            raise BadInput("give --crops or --image-size, not both")
        size = parse_size(image_size) if image_size is not None else None
        if size is not None:
            grid = select_crop_grid(*size, m)
        elif crops is not None:
            grid = parse_grid(crops)
        else:
            grid = (2, 2) if m.crops_allowed else NO_CROPS
        workload = Workload(
            mode=m.name,
            crop_grid=grid,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            batch=batch,
            dtype=dtype,
            context=parse_context(context),
            attn_impl=attn.value,
            prefill_logits=prefill_logits.value,
            image_size=size,
        )
        est = estimate(workload)
        peak = (
            resolve_peak(gpu, tflops=peak_tflops, tbps=peak_tbps)
            if gpu or peak_tflops is not None or peak_tbps is not None
            else None
        )
    except BadInput as exc:
        raise BadInput(exc.message, ExitCode.USAGE) from None
    if peak is not None:
        for note in peak.notes:
            ui.warn(note)
    as_json = json_out or fmt is Format.json
    text = json.dumps(to_json(est, peak), indent=2) + "\n" if as_json else to_markdown(est, peak, max_depth=depth)
    if out is not None:
        write_text(out, text)
        ui.info(f"wrote the analytic model ({'json' if as_json else 'md'}) to {out}")
    else:
        typer.echo(text, nl=False)
