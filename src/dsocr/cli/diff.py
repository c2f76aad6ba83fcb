"""``dsocr diff A B``: compare two runs (run directories or analysis.json files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_dir, option
from dsocr.contract import rundir
from dsocr.contract.paths import refuse_overwrite
from dsocr.report.diff_notes import comparability_warnings, headline

DIFF_MD = "diff.md"
DIFF_HTML = "diff.html"


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="The baseline: a run directory or an analysis.json.", show_default=False)],
    b: Annotated[Path, typer.Argument(help="The run compared with it (same kinds).", show_default=False)],
    out: Annotated[
        Path | None,
        option(
            "diff",
            "--out",
            "-o",
            help=f"Directory to write {DIFF_MD} and {DIFF_HTML} into (default: print the Markdown on stdout).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Per stage, top kernels and operators: absolute and relative change, judged against the repeat spread."""
    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    if out is not None:
        check_out_dir(out)
    from dsocr.report import diff as d

    result = d.diff_paths(a, b)
    counts = d.summary_line(result)
    warnings = comparability_warnings(a, b, result)
    head = headline(result)
    for w in warnings:
        ui.warn(w)
    if out is not None:
        check_out_dir(out)
        refuse_overwrite(
            [out / DIFF_MD, out / DIFF_HTML],
            [*_files_read(a), *_files_read(b)],
            "choose another --out (dsocr never overwrites an input)",
        )
        from dsocr.report.html import write_all

        write_all(
            out,
            {
                DIFF_MD: d.render(result, "md", head, warnings),
                DIFF_HTML: d.render(result, "html", head, warnings),
            },
        )
    if json_out:
        doc = {**result.to_dict(), "headline": head, "warnings": warnings}
        sys.stdout.write(json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")
    elif out is not None:
        if not quiet:
            ui.out.print(str(out / DIFF_MD), markup=False)
            ui.out.print(str(out / DIFF_HTML), markup=False)
    elif not quiet:
        sys.stdout.write(d.render(result, "md", head, warnings))
    if out is not None or json_out:
        ui.info(head)  # (the Markdown on stdout has it)
    ui.info(", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())))


def _files_read(side: Path) -> list[Path]:
    """The files ``dsocr diff`` reads for one side (a run directory's documents, or the analysis.json)."""
    if not side.is_dir():
        return [side]
    names = [rundir.ANALYSIS_JSON, rundir.MANIFEST, rundir.TIMING, rundir.TIMING_BASELINE]
    return [*(side / n for n in names), *side.glob(rundir.TIMING_BASELINE_GLOB)]
