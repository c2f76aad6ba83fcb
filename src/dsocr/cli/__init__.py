"""Layer 7: the ``dsocr`` command line (typer), thin: parse, call, print.

Each module in this package registers its commands on :data:`dsocr.cli.app.app`; they are
discovered at start-up so a new command is one new file (named like its command). When the
command line names a command, only that module is imported (start-up time matters for
``dsocr analyze`` on small traces); ``--help`` and unknown names import them all.

Every error ends as one line on stderr and a documented exit code (docs/exit-codes.md): a
:class:`~dsocr.contract.errors.DsocrError` from a command, and typer's usage errors alike.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pkgutil
import signal
import sys
import traceback
from typing import Final, NoReturn

import typer

from dsocr.cli.app import app
from dsocr.cli.common import Interrupted, apply_legacy_envvars
from dsocr.contract.errors import DsocrError, ExitCode

_NOT_COMMANDS = {"app", "common"}

#: Commands whose process, run from the command line, ends without the interpreter's teardown.
QUICK_EXIT_COMMANDS: Final = frozenset({"analyze"})

#: click's base class of command-line errors (unknown option or command, missing or bad value), as typer
#: raises them when it runs with ``standalone_mode=False``. typer exports only its subclass
#: ``typer.BadParameter``; above it stands click's documented hierarchy (BadParameter < UsageError <
#: ClickException), whether typer vendors click (>= 0.26) or depends on it.
USAGE_ERROR: Final[type[Exception]] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _command_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and info.name not in _NOT_COMMANDS
    )


def _register_commands(args: list[str] | None = None) -> None:
    """Import the command modules: only the one ``args`` names, or all of them."""
    modules = _command_modules()
    first = next((a for a in args or [] if not a.startswith("-")), None)
    wanted = [first] if first in modules else modules
    for name in wanted:
        importlib.import_module(f"{__name__}.{name}")


def usage_error_line(exc: Exception) -> str:
    """A typer/click usage error as the text of one ``dsocr: error:`` line: the command, click's message,
    where the help is. Empty when there is nothing left to say (``dsocr`` alone: typer printed the help)."""
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split()).rstrip(".")
    if not message:
        return ""
    ctx = getattr(exc, "ctx", None)
    command = str(getattr(ctx, "command_path", "") or "dsocr")
    return f"{command}: {message}; see `{command} --help`"


def _run(argv: list[str]) -> int:
    """Run the typer app without its own exit handling; the exit code."""
    try:
        # standalone_mode=False: typer returns (a command's result, --help, typer.Exit's code) or raises;
        # we print and exit. typer turns Ctrl-C into Exit(130), which comes back here as the value 130.
        result = app(args=argv, prog_name="dsocr", standalone_mode=False)
    except typer.Abort:  # Ctrl-C / end of input at a prompt
        result = ExitCode.INTERRUPTED
    except USAGE_ERROR as exc:
        line = usage_error_line(exc)
        if line:
            print(f"dsocr: error: {line}", file=sys.stderr)
        return ExitCode.USAGE
    return _exit_code(result)


def _exit_code(result: object) -> int:
    """A command's (or typer's) result as the exit code: an int as is (130 also prints that), else OK."""
    if isinstance(result, int) and not isinstance(result, bool):
        if result == ExitCode.INTERRUPTED:
            print("dsocr: interrupted", file=sys.stderr)
        return result
    return ExitCode.OK


def _stop_on_sigterm(signum: int, frame: object) -> NoReturn:
    """SIGTERM acts as Ctrl-C: the same cleanup (no temp files left), the manifest marked, exit code 130."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dsocr`` console script: one line per error, documented exit codes."""
    global _quick_exit_code
    args = list(sys.argv[1:] if argv is None else argv)
    code: int = ExitCode.OK
    if argv is None:  # the console script, not a test calling main(): SIGTERM cleans up as Ctrl-C does
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        _register_commands(args)
        for warning in apply_legacy_envvars(args, os.environ):
            print(f"dsocr: warning: {warning}", file=sys.stderr)
        code = _run(args)
    except Interrupted as exc:
        print(f"dsocr: interrupted: {exc.message}" if exc.message else "dsocr: interrupted", file=sys.stderr)
        code = exc.exit_code
    except DsocrError as exc:
        print(f"dsocr: error: {exc.message}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("dsocr: interrupted", file=sys.stderr)
        code = ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: one line unless --verbose
        if os.environ.get("DSOCR_VERBOSE"):
            traceback.print_exc()
        print(
            f"dsocr: internal error: {type(exc).__name__}: {exc} "
            "(a bug in dsocr; rerun with --verbose for the traceback and please report it)",
            file=sys.stderr,
        )
        code = ExitCode.INTERNAL
    if argv is None and args[:1] and args[0] in QUICK_EXIT_COMMANDS:
        _quick_exit_code = code
    sys.exit(code)


#: Set by :func:`main` for a command of :data:`QUICK_EXIT_COMMANDS` run from the command line: the exit code
#: :func:`_end_without_teardown` ends the process with.
_quick_exit_code: int | None = None


def _end_without_teardown() -> None:
    """End the process, once every other exit handler ran, without the interpreter's teardown.

    Registered when this module is imported, so that it runs after the exit handlers registered later
    (``atexit`` runs them in reverse order), i.e. all that the command's imports and the command itself
    registered; then stdout and stderr are flushed and ``os._exit`` skips freeing every module and object
    one by one (about 35 ms after analyzing the H100 fixture; the OS frees the memory at once). Does
    nothing unless :func:`main` ran a quick-exit command from the command line. Exit handlers
    registered before this module was imported do not run on that path.
    """
    code = _quick_exit_code
    if code is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # stdout closed early (| head): what Python's own exit reports then
        code = code or 120
    os._exit(code)


atexit.register(_end_without_teardown)
