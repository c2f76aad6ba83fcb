"""``dsocr whatif run`` (the baseline and variants of one workload, captured into one directory) and
``dsocr whatif report`` (their comparison, from the run directories alone); docs/whatif.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dsocr.cli._values import capture_attn_value, crops_value, device_value, dtype_value, mode_value, moe_value
from dsocr.cli.app import app
from dsocr.cli.common import Interrupted, JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_dir, option
from dsocr.contract.errors import BadUsage, DsocrError

whatif_app = typer.Typer(
    name="whatif",
    help="Measured what-ifs: capture a baseline and variants of one workload, and compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(whatif_app, name="whatif")

_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _run_opt(name: str, help_text: str, *, hidden: bool = False, **kwargs: Any) -> Any:
    return option("whatif_run", name, help=help_text, hidden=hidden, **kwargs)


def _report_opt(name: str, help_text: str, *decls: str, **kwargs: Any) -> Any:
    return option("whatif_report", name, *decls, help=help_text, **kwargs)


def parse_report_formats(value: str) -> tuple[str, ...]:
    """``md,html,json`` -> the formats (BadUsage on an unknown one)."""
    from dsocr.report.whatif import FORMATS

    got = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    bad = [f for f in got if f not in FORMATS]
    if bad or not got:
        raise BadUsage(
            f"--format {value!r}: unknown format {', '.join(bad) or '(none)'}; use a comma list of {','.join(FORMATS)}"
        )
    return got


def parse_batches(value: str | None) -> tuple[int, ...]:
    """``1,2,4,8`` -> batches (BadUsage unless every one is a positive whole number)."""
    if not value:
        return ()
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise BadUsage(f"--sweep-batch {value!r}: give positive whole numbers of pages, e.g. 1,2,4,8,16,32")
    return tuple(int(p) for p in parts)


def parse_sweep_with(value: str | None) -> tuple[tuple[str, str], ...] | None:
    """``moe=grouped,decode=graph`` -> settings every sweep point has besides its batch."""
    if not value:
        return None
    from dsocr.contract.whatif_index import parse_variant

    try:
        return parse_variant(f"sweep={value}").settings
    except BadUsage as exc:
        raise BadUsage(exc.message.replace("--variant 'sweep=", "--sweep-with '", 1)) from None


def write_report(paths: list[Path], out: Path, formats: tuple[str, ...]) -> tuple[list[Path], str, tuple[str, ...]]:
    """Build the what-if report of ``paths`` and write it into ``out`` as one set; the files, headline, warnings."""
    from dsocr.report import whatif as w
    from dsocr.report.report_set import write_report_set

    report = w.collect(paths)
    texts = w.render(report, formats)
    written = write_report_set(out, texts, entries=(w.REPORT_MD, w.REPORT_HTML, w.REPORT_JSON))
    return written, w.headline(report), report.warnings


@whatif_app.command("run")
def run(
    variant: Annotated[
        list[str] | None,
        _run_opt(
            "--variant",
            "NAME=key=value[,key=value...]: a variant of the baseline (keys: moe, attn, decode, batch, dtype), e.g. "
            "graph=moe=grouped,decode=graph; repeatable.",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        _run_opt("--profile", "Comma list of variant names (baseline too) also captured under nsys and analyzed."),
    ] = None,
    sweep_batch: Annotated[
        str | None,
        _run_opt(
            "--sweep-batch",
            "A batch sweep: one variant per batch (e.g. 1,2,4,8,16,32; named batchN), stopping at the first that "
            "runs out of memory.",
        ),
    ] = None,
    sweep_with: Annotated[
        str | None,
        _run_opt("--sweep-with", "What every sweep point sets besides batch (default moe=grouped,decode=graph)."),
    ] = None,
    out: Annotated[Path, _run_opt("--out", "The what-if directory (one run directory per variant, whatif.json).")] = (
        Path("whatif")
    ),
    pages: Annotated[
        list[Path] | None,
        _run_opt("--pages", "Page images, PDFs or directories (default: the shipped 12-page set); repeatable."),
    ] = None,
    mode: Annotated[str | None, _run_opt("--mode", "Resolution mode (default gundam).", callback=mode_value)] = None,
    crops: Annotated[
        str | None, _run_opt("--crops", "Crop grid: auto (default), none or WxH.", callback=crops_value)
    ] = None,
    repeats: Annotated[int | None, _run_opt("--repeats", "Timed passes over all pages per run (default 3).", min=1)] = (
        None
    ),
    max_new_tokens: Annotated[
        int | None, _run_opt("--max-new-tokens", "Tokens generated per page (default 32).", min=1)
    ] = None,
    prompt_tokens: Annotated[
        int | None, _run_opt("--prompt-tokens", "Text prompt length in tokens (default 12).", min=1)
    ] = None,
    warmup: Annotated[int, _run_opt("--warmup", "Warm-up rounds before timing.", min=0)] = 2,
    runs: Annotated[int, _run_opt("--runs", "Unprofiled runs per variant (each `--repeats` passes).", min=1)] = 1,
    model: Annotated[str, _run_opt("--model", "'replica' or a checkpoint directory (as dsocr capture).")] = "replica",
    random_weights: Annotated[
        bool, _run_opt("--random-weights", "A checkpoint dir's config with seeded random weights.")
    ] = False,
    attn: Annotated[
        str | None,
        _run_opt("--attn", "The baseline's decoder attention: eager (default) or sdpa.", callback=capture_attn_value),
    ] = None,
    moe: Annotated[
        str, _run_opt("--moe", "The baseline's MoE execution: loop (default) or grouped.", callback=moe_value)
    ] = "loop",
    dtype: Annotated[str, _run_opt("--dtype", "auto, bfloat16, float16, float32.", callback=dtype_value)] = "auto",
    device: Annotated[str, _run_opt("--device", "cuda, cuda:N or cpu.", callback=device_value)] = "cuda",
    nsys: Annotated[Path | None, _run_opt("--nsys", "The nsys executable for the profiled variants.")] = None,
    seed: Annotated[int, _run_opt("--seed", "Seed of the replica's random weights.")] = 0,
    no_analyze: Annotated[
        bool, _run_opt("--no-analyze", "Capture the profiled variants without analyzing them (no polars needed).")
    ] = False,
    shrink: Annotated[
        str | None, _run_opt("--shrink", "Tests: SAM,CLIP,DECODER[,VOCAB[,EXPERTS]] layer counts.", hidden=True)
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Capture the baseline and every variant on the same pages (unprofiled timing each; nsys where asked)."""
    from functools import partial

    from dsocr.capture.driver import CaptureSettings, run_capture
    from dsocr.capture.whatif import SWEEP_SETTINGS, WhatIfPlan, run_whatif
    from dsocr.cli.capture import RichReporter, _analyze_into, parse_shrink
    from dsocr.contract.whatif_index import COMPLETE, parse_variant

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    analyze = not no_analyze
    check_out_dir(out)
    variants = tuple(parse_variant(v) for v in variant or ())
    batches = parse_batches(sweep_batch)
    sweep_settings = parse_sweep_with(sweep_with) or SWEEP_SETTINGS
    if sweep_with and not batches:
        raise BadUsage("--sweep-with without --sweep-batch: give the batches too (e.g. --sweep-batch 1,2,4,8)")
    if not variants and not batches:
        raise BadUsage("dsocr whatif run: give at least one --variant or a --sweep-batch to compare with the baseline")
    base = CaptureSettings(
        repeats=repeats or 3,
        pages=tuple(pages or ()),
        mode=mode or "gundam",
        crops=crops or "auto",
        max_new_tokens=max_new_tokens or 32,
        prompt_tokens=prompt_tokens or 12,
        warmup=warmup,
        model=model,
        random_weights=random_weights,
        attn=attn,
        moe=moe,
        device=device,
        dtype=_DTYPE_ALIASES.get(dtype.strip().lower(), dtype),
        baseline_runs=runs,
        calibrate=False,
        analyze=analyze,
        nsys=nsys,
        seed=seed,
        shrink=parse_shrink(shrink),
    )
    names = frozenset(p.strip() for p in (profile or "").split(",") if p.strip())
    plan = WhatIfPlan(base, out, variants, names, batches, sweep_settings)
    reporter = RichReporter(ui)
    command = ["dsocr", *sys.argv[1:]]

    def analyze_or_warn(run_dir: Path) -> None:
        """A profiled variant's analysis; where it cannot run (no polars on the GPU machine) the capture stands."""
        try:
            _analyze_into(run_dir)
        except DsocrError as exc:
            ui.warn(f"{run_dir} is captured but not analyzed ({exc.message}); run `dsocr analyze {run_dir}` later")

    def capture(settings: CaptureSettings) -> Any:
        return run_capture(settings, reporter=reporter, analyze=analyze_or_warn, command=command)

    try:
        with reporter:
            index = run_whatif(plan, partial(capture), command, reporter)
    except KeyboardInterrupt:
        raise Interrupted(f"{out} keeps what ran (whatif.json says which variants)") from None
    base_entry = index.baseline
    analyzed = (out / base_entry.run_dir / "analysis.json").is_file()
    if analyze and analyzed and base_entry.status == COMPLETE and len(index.entries) > 1:
        # the baseline's report was written before its variants ran: again, now quoting their measured gains
        try:
            _analyze_into(out / base_entry.run_dir)
        except DsocrError as exc:
            ui.warn(f"the baseline's report does not quote the measured gains: {exc.message}")
    written, head, warnings = write_report([out], out, ("md", "html", "json"))
    for w in warnings:
        ui.warn(w)
    if json_out:
        print(json.dumps({"out": str(out), "whatif": index.to_json(), "report": [str(p) for p in written]}, indent=1))
    elif not quiet:
        ui.info(head)
        ui.out.print(str(out), markup=False)


@whatif_app.command("report")
def report(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="A what-if directory (or its whatif.json), or run directories: the first is the baseline.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, _report_opt("--out", "Directory to write whatif.md, whatif.html, whatif-report.json into.", "-o")
    ] = None,
    fmt: Annotated[str, _report_opt("--format", "Comma list of md, html, json.", "-f")] = "md,html,json",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare the baseline and its variants from their run directories alone (no GPU, no trace needed)."""
    from dsocr.report import whatif as w

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    formats = parse_report_formats(fmt)
    if out is None:
        report_ = w.collect(paths)
        for x in report_.warnings:
            ui.warn(x)
        if json_out:
            sys.stdout.write(json.dumps(w.to_json(report_), indent=1, allow_nan=False, default=str) + "\n")
        elif not quiet:
            sys.stdout.write(w.render_md(report_))
        return
    check_out_dir(out)
    written, head, warnings = write_report(paths, out, formats)
    for x in warnings:
        ui.warn(x)
    if json_out:
        sys.stdout.write(json.dumps({"out": str(out), "files": [str(p) for p in written], "headline": head}) + "\n")
    elif not quiet:
        ui.info(head)
        for p in written:
            ui.out.print(str(p), markup=False)
