"""Options and console helpers shared by every command (kept thin: parse, call, print)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        envvar="DSOCR_QUIET",
        show_envvar=True,
        help="Print nothing but errors (and the JSON with --json).",
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        envvar="DSOCR_JSON",
        show_envvar=True,
        help="Print the result as JSON on stdout (for scripts).",
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        envvar="DSOCR_VERBOSE",
        show_envvar=True,
        help="Print debugging detail, and tracebacks of internal errors.",
    ),
]


class Ui:
    """Where a command prints: progress and messages on stderr, results on stdout."""

    def __init__(self, quiet: bool = False, json_mode: bool = False, verbose: bool = False):
        self.quiet = quiet or json_mode
        self.json_mode = json_mode
        self.verbose = verbose
        if verbose:
            os.environ["DSOCR_VERBOSE"] = "1"
        no_color = bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()
        self.err = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)
        self.out = Console(
            no_color=bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty(), highlight=False, soft_wrap=True
        )

    def info(self, message: str) -> None:
        """A message for people (suppressed by --quiet/--json)."""
        if not self.quiet:
            self.err.print(message)

    def debug(self, message: str) -> None:
        """A message shown with --verbose only."""
        if self.verbose:
            self.err.print(f"[dim]{message}[/dim]")

    def warn(self, message: str) -> None:
        """A warning; shown even with --quiet."""
        self.err.print(f"dsocr: warning: {message}", markup=False)

    @property
    def show_progress(self) -> bool:
        """Whether progress bars should be drawn."""
        return not self.quiet and self.err.is_terminal
