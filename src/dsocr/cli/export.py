"""``dsocr export RUN_DIR``: export a run's trace.nsys-rep to trace.sqlite (after a failed export)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, option
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.contract.paths import check_input


@app.command()
def export(
    run_dir: Annotated[
        Path,
        typer.Argument(help="A run directory made by `dsocr capture` (or a .nsys-rep file).", show_default=False),
    ],
    nsys: Annotated[
        Path | None,
        option(
            "export",
            "--nsys",
            help="The nsys executable to use (default: the one the capture used, else the usual search).",
        ),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Export a capture's .nsys-rep to SQLite with nsys and check that it holds the dsocr ranges.

    The new export replaces trace.sqlite (and its counts the manifest's) only once it passed the check.
    """
    from dsocr.capture.driver import export_run
    from dsocr.cli.capture import RichReporter

    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    # exit code 3, as for every input path that does not exist (or sits in a locked directory); a FIFO is refused
    if not os.path.lexists(run_dir):
        raise InputNotFound(f"{run_dir}: no such run directory; pass a directory made by `dsocr capture`")
    check_input(run_dir, "pass a directory made by `dsocr capture`")
    # the report to export, checked before nsys is looked for: missing 3, not a report 4
    if run_dir.is_dir() and not os.path.lexists(run_dir / rundir.TRACE_REP):
        raise InputNotFound(f"{run_dir / rundir.TRACE_REP}: no such nsys report; capture again with `dsocr capture`")
    if not run_dir.is_dir() and run_dir.suffix != ".nsys-rep":
        raise BadInput(
            f"{run_dir}: is not an .nsys-rep file; pass a run directory made by `dsocr capture` (or its report)"
        )
    with RichReporter(ui) as reporter:
        sqlite = export_run(run_dir, nsys, reporter)
    if json_out:
        print(json.dumps({"sqlite": str(sqlite)}))
    elif not quiet:
        ui.out.print(str(sqlite), markup=False)
