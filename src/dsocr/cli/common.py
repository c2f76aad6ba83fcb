"""Options and console helpers shared by every command (kept thin: parse, call, print)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from dsocr.contract.errors import BadUsage, DsocrError, ExitCode

if TYPE_CHECKING:
    from rich.console import Console

#: Options whose meaning depends on the command (an output directory or file, an output format, a
#: rendering depth) or whose name is also a command's (``--pages``, ``--model``): their variable is
#: ``DSOCR_<COMMAND>_<OPTION>``. Every other option means the same wherever it appears (the
#: workload, the GPU, the tools, the shared flags) and its variable is ``DSOCR_<OPTION>``.
#: ``--attn`` too: the attention the analytic model assumes (``dsocr model``) is not the decoder attention a
#: capture executes (``dsocr capture``).
PER_COMMAND_OPTIONS: Final = frozenset({"--out", "--format", "--depth", "--pages", "--model", "--attn"})


def envvar_for(command: str, flag: str) -> str:
    """The environment variable of ``dsocr COMMAND --option`` under the naming convention."""
    stem = flag.lstrip("-").replace("-", "_").upper()
    if flag in PER_COMMAND_OPTIONS:
        return f"DSOCR_{command.replace('-', '_').upper()}_{stem}"
    return f"DSOCR_{stem}"


def option(command: str, *decls: str, help: str, **kwargs: Any) -> Any:
    """``typer.Option(*decls)`` with the convention's variable (named after ``decls[0]``), shown in --help."""
    return typer.Option(*decls, envvar=envvar_for(command, decls[0]), show_envvar=True, help=help, **kwargs)


_CAPTURE_STEMS: Final = (
    "REPEATS",
    "MODE",
    "CROPS",
    "MAX_NEW_TOKENS",
    "PROMPT_TOKENS",
    # not WARMUP: DSOCR_CAPTURE_WARMUP is --capture-warmup's own variable now
    "TRUST_REMOTE_CODE",
    "DEVICE",
    "DTYPE",
    "OP_RANGES",
    "MODULE_RANGES",
    "NO_BASELINE",
    "NO_ANALYZE",
    "NSYS",
    "RUNS_DIR",
    "SEED",
    "SHRINK",
)

#: Old variable names still read (with a warning) by the command they belonged to: old -> new.
LEGACY_ENVVARS: Final[Mapping[str, Mapping[str, str]]] = {
    "capture": {f"DSOCR_CAPTURE_{stem}": f"DSOCR_{stem}" for stem in _CAPTURE_STEMS},
    "doctor": {"DSOCR_CAPTURE_NSYS": "DSOCR_NSYS", "DSOCR_CAPTURE_RUNS_DIR": "DSOCR_RUNS_DIR"},
    "export": {"DSOCR_EXPORT_NSYS": "DSOCR_NSYS"},
    "model": {"DSOCR_NEW_TOKENS": "DSOCR_MAX_NEW_TOKENS", "DSOCR_ATTN": "DSOCR_MODEL_ATTN"},
    "analyze": {"DSOCR_OUT": "DSOCR_ANALYZE_OUT", "DSOCR_FORMAT": "DSOCR_ANALYZE_FORMAT"},
}


def apply_legacy_envvars(argv: list[str], environ: MutableMapping[str, str]) -> list[str]:
    """Copy old variable names of the command in ``argv`` to their new names (unless set); warnings to print."""
    command = next((word for word in argv if not word.startswith("-")), None)
    warnings = []
    for old, new in LEGACY_ENVVARS.get(command or "", {}).items():
        if old in environ and new not in environ:
            environ[new] = environ[old]
            warnings.append(f"{old} is the old name of {new}: rename it (it still works for now)")
    return warnings


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse (exit 2, before any work) an output directory that names a file or lies under one (``os.path``'s
    tests, which never raise: pathlib's raise PermissionError under a directory that cannot be searched)."""
    blocker = next((p for p in (out, *out.parents) if os.path.exists(p) and not os.path.isdir(p)), None)
    if blocker == out:
        raise BadUsage(f"{option} {out}: exists and is not a directory; choose another {option}")
    if blocker is not None:
        raise BadUsage(f"{option} {out}: {blocker} is a file, not a directory; choose another {option}")


def check_out_file(out: Path, example: str, option: str = "--out") -> None:
    """Refuse (exit 2, before any work) an output file that names a directory or lies under a file."""
    if os.path.isdir(out):
        raise BadUsage(f"{option} {out}: is a directory; give {option} a file name (e.g. {out / example})")
    blocker = next((p for p in out.parents if os.path.exists(p) and not os.path.isdir(p)), None)
    if blocker is not None:
        raise BadUsage(f"{option} {out}: {blocker} is a file, not a directory; choose another {option}")


class Interrupted(DsocrError):
    """Ctrl-C, with what was kept (``dsocr: interrupted: <message>``, exit code 130)."""

    exit_code = ExitCode.INTERRUPTED


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

    # the consoles are made on first use: rich costs start-up time a quiet run need not pay
    @cached_property
    def err(self) -> Console:
        """The console on stderr (progress, messages)."""
        from rich.console import Console

        no_color = bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()
        return Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)

    @cached_property
    def out(self) -> Console:
        """The console on stdout (results)."""
        from rich.console import Console

        no_color = bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
        return Console(no_color=no_color, highlight=False, soft_wrap=True)

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

    def progress_bar(self, transient: bool = False) -> Any:
        """A started rich progress bar on stderr (description, bar, done/total, elapsed); stop() it after
        (``transient``: it disappears when stopped)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=transient,
        )
        bar.start()
        return bar
