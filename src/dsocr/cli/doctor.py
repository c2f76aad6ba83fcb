"""``dsocr doctor``: what works on this machine, and what GPU capture still needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import attrs
import typer
from rich.table import Table

from dsocr.capture.doctor import CHECK_MODEL_PATHS, Diagnosis, diagnose
from dsocr.capture.doctor_facts import gather_facts
from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, option
from dsocr.contract.rundir import RUNS_DIR

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _table(diagnosis: Diagnosis) -> Table:
    table = Table(title="dsocr doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("for", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in diagnosis.checks:
        table.add_row(check.name, check.scope, f"[{_STYLE[check.status]}]{check.status}[/]", check.detail)
    return table


def _print_fixes(ui: Ui, diagnosis: Diagnosis) -> None:
    fixes = [c for c in diagnosis.checks if c.fix and (c.status != "ok" or c.name == CHECK_MODEL_PATHS)]
    if fixes:
        ui.out.print("fixes:")
        for check in fixes:
            ui.out.print(f"  {check.name} ({check.status}): {check.fix}", markup=False)


@app.command()
def doctor(
    nsys: Annotated[
        Path | None,
        option(
            "doctor",
            "--nsys",
            help="The nsys executable (or its directory) a capture would use; default: $NSYS, PATH, /opt/nvidia.",
        ),
    ] = None,
    runs_dir: Annotated[
        Path,
        option(
            "doctor",
            "--runs-dir",
            help="Where captures will be written (its disk's free space is checked).",
        ),
    ] = Path(RUNS_DIR),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check Python, packages, GPU and driver, CUDA in torch, nsys, NVTX, peaks and disk.

    Exit code 0 when GPU capture can work here, 7 when it cannot. Analysis (analyze, model, diff) needs only the checks marked "analysis": on a laptop without a GPU doctor says "analysis works here; GPU capture needs ..." and exits 7 although nothing is wrong.
    """  # noqa: E501
    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    if ui.show_progress:
        with ui.err.status("dsocr doctor: looking at this machine") as status:
            facts = gather_facts(
                nsys=str(nsys) if nsys else None, runs_dir=runs_dir, step=lambda what: status.update(f"checking {what}")
            )
    else:
        facts = gather_facts(
            nsys=str(nsys) if nsys else None, runs_dir=runs_dir, step=lambda what: ui.debug(f"checking {what}")
        )
    diagnosis = diagnose(facts)
    if json_out:
        print(json.dumps(diagnosis.to_json(), indent=2))
    elif quiet:
        for check in diagnosis.checks:
            if check.status == "fail":
                ui.warn(f"{check.name}: {check.detail}; fix: {check.fix}")
    else:
        ui.out.print(_table(diagnosis))
        _print_fixes(ui, diagnosis)
        if verbose:
            for key, value in attrs.asdict(facts).items():
                ui.out.print(f"{key}: {value}", markup=False)
        ui.out.print(diagnosis.summary, markup=False)
    if diagnosis.exit_code:
        raise typer.Exit(int(diagnosis.exit_code))
