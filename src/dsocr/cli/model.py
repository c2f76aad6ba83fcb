"""``dsocr model``: the analytic FLOPs/bytes/memory model for a workload, no GPU needed."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dsocr.cli._values import (
    context_value,
    crops_value,
    dtype_value,
    mode_value,
    positive_value,
    size_value,
    workload_value,
)
from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_file, option
from dsocr.contract.errors import BadInput, BadUsage


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


def _opt(name: str, help_text: str, *aliases: str, **kwargs: Any) -> Any:
    return option("model", name, *aliases, help=help_text, **kwargs)


#: capture's dtype names (shared through DSOCR_DTYPE) -> the model's; auto is bf16, as a capture on CUDA.
_DTYPE_ALIASES = {"auto": "bf16", "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@app.command()
def model(
    workload: Annotated[
        str | None,
        _opt(
            "--workload",
            "Named workload: one page of dsocr-standard-v1 (gundam, an A4 page unless --image-size names another "
            "of its page sizes, 512 new tokens) or dsocr-quick-v1 (32 new tokens). A flag that contradicts it is "
            "refused.",
            callback=workload_value,
        ),
    ] = None,
    mode: Annotated[
        str | None,
        _opt("--mode", "Resolution mode: tiny, small, base, large, gundam (default), gundam-m.", callback=mode_value),
    ] = None,
    crops: Annotated[
        str | None,
        _opt(
            "--crops",
            "Crop grid: auto (from --image-size as the vendor picks it, else 2x2 for gundam/gundam-m; the default), "
            "none, or WxH (e.g. 3x1).",
            callback=crops_value,
        ),
    ] = None,
    image_size: Annotated[
        str | None,
        _opt(
            "--image-size",
            "Image size WxH in pixels: the crop grid the vendor's rule picks for it (--workload: one of its page "
            "sizes, default its most common).",
            callback=size_value,
        ),
    ] = None,
    prompt_tokens: Annotated[
        int | None, _opt("--prompt-tokens", "Text tokens in the prompt (prefill = image + these; default 12).", min=0)
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        _opt(
            "--max-new-tokens",
            "Generated tokens per page: the first from prefill, then N-1 decode steps (default 32, as capture's).",
            "--new-tokens",
            min=1,
        ),
    ] = None,
    context: Annotated[
        str,
        _opt(
            "--context",
            "Decode context per step: auto (real length, prefill + step), max (every step at the final length) "
            "or fixed:N (N every step; fixed:8192 = the model's window).",
            callback=context_value,
        ),
    ] = "auto",
    batch: Annotated[int, _opt("--batch", "Pages processed together.", min=1)] = 1,
    dtype: Annotated[
        str,
        _opt(
            "--dtype",
            "Compute dtype: auto (bf16, as a capture on CUDA), bf16, fp16, fp32 (or torch's names).",
            callback=dtype_value,
        ),
    ] = "auto",
    attn: Annotated[
        AttnChoice, _opt("--attn", "Attention implementation assumed (eager materializes the scores).")
    ] = AttnChoice.sdpa,
    prefill_logits: Annotated[
        LogitsChoice, _opt("--prefill-logits", "lm_head in prefill on the last position or all.")
    ] = LogitsChoice.last,
    gpu: Annotated[
        str | None,
        _opt("--gpu", "GPU name as CUDA reports it (e.g. 'NVIDIA H100 80GB HBM3'): adds roofline times."),
    ] = None,
    peak_tflops: Annotated[
        float | None, _opt("--peak-tflops", "Dense tensor peak TFLOP/s (overrides the table).", callback=positive_value)
    ] = None,
    peak_tbps: Annotated[
        float | None, _opt("--peak-tbps", "Memory bandwidth TB/s (overrides the table).", callback=positive_value)
    ] = None,
    fmt: Annotated[Format, _opt("--format", "Output format.", "-f")] = Format.md,
    depth: Annotated[
        int | None, _opt("--depth", "Markdown: show modules down to this depth (0 = top level).", min=0)
    ] = None,
    out: Annotated[Path | None, _opt("--out", "Write to this file (atomically) instead of stdout.", "-o")] = None,
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
    from dsocr.model.workloads import get_workload, matching_page, resolve

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    if out is not None:
        check_out_file(out, "model.md")
    try:
        given = {"mode": mode, "crops": crops, "max_new_tokens": max_new_tokens, "prompt_tokens": prompt_tokens}
        fixed, _ = resolve(workload, given)
        named = get_workload(workload) if workload is not None else None
        size = parse_size(image_size) if image_size is not None else None
        if named is not None:
            if size is not None and size not in named.page_sizes:
                sizes = ", ".join(f"{w}x{h}" for w, h in dict.fromkeys(named.page_sizes))
                raise BadInput(
                    f"--workload {named.name} has pages of {sizes}, --image-size {image_size} contradicts it: "
                    "give one of them, or drop --image-size (or DSOCR_IMAGE_SIZE) or --workload"
                )
            size = size or named.page_size
        m = get_mode(fixed["mode"])
        crops = str(fixed["crops"])
        auto = crops.strip().lower() == "auto"  # as capture's: the grid follows the image (2x2 without one)
        if not auto and image_size is not None:
            raise BadInput("give --crops or --image-size, not both")
        if size is not None:
            grid = select_crop_grid(*size, m)
        elif not auto:
            grid = parse_grid(crops)
        else:
            grid = (2, 2) if m.crops_allowed else NO_CROPS
        work = Workload(
            mode=m.name,
            crop_grid=grid,
            prompt_tokens=int(fixed["prompt_tokens"]),
            new_tokens=int(fixed["max_new_tokens"]),
            batch=batch,
            dtype=_DTYPE_ALIASES.get(dtype.strip().lower(), dtype),
            context=parse_context(context),
            attn_impl=attn.value,
            prefill_logits=prefill_logits.value,
            image_size=size,
        )
        est = estimate(work)
        peak = (
            resolve_peak(gpu, tflops=peak_tflops, tbps=peak_tbps)
            if gpu or peak_tflops is not None or peak_tbps is not None
            else None
        )
    except BadInput as exc:
        raise BadUsage(exc.message) from None
    if peak is not None:
        for note in peak.notes:
            ui.warn(note)
    as_json = json_out or fmt is Format.json
    page_of = named or matching_page(est.workload.mode, est.workload.crop_grid, fixed, batch)
    if as_json:
        text = json.dumps({**to_json(est, peak), "named_workload": _named_json(page_of)}, indent=2) + "\n"
    else:
        text = to_markdown(est, peak, max_depth=depth, named=page_of.describe() if page_of else None)
    if out is not None:
        write_text(out, text)
        ui.info(f"wrote the analytic model ({'json' if as_json else 'md'}) to {out}")
    elif not quiet or json_out:  # --quiet: nothing but errors (and the JSON with --json)
        typer.echo(text, nl=False)


def _named_json(named: Any) -> dict[str, Any] | None:
    """The named workload one page of which the estimate is (``None``: a custom workload)."""
    return None if named is None else {**named.to_json(), "estimate": "one page"}
