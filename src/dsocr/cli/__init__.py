"""Layer 7: the ``dsocr`` command line (typer), thin: parse, call, print.

Each module in this package registers its commands on :data:`dsocr.cli.app.app`; they are
discovered at start-up so a new command is one new file (named like its command). When the
command line names a command, only that module is imported (start-up time matters for
``dsocr analyze`` on small traces); ``--help`` and unknown names import them all.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import pkgutil
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, Final, NoReturn, TextIO, cast

import typer
from typer import _click as click  # typer vendors click

from dsocr.cli.app import app
from dsocr.cli.common import Interrupted, apply_legacy_envvars
from dsocr.contract.errors import DsocrError, ExitCode

_NOT_COMMANDS = {"app", "common"}


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


def _show_usage_error(exc: click.ClickException) -> None:
    """A usage error as typer prints it (click's message, with the command's usage line)."""
    try:
        from typer import rich_utils
    except ImportError:  # typer without rich
        exc.show()
    else:
        rich_utils.rich_format_error(exc)


def _commands() -> dict[str, Callable[..., Any]]:
    """The registered commands by name (typer's naming: the function's, ``_`` -> ``-``)."""
    return {
        info.name or info.callback.__name__.replace("_", "-"): info.callback
        for info in app.registered_commands
        if info.callback is not None
    }


def _call_direct(argv: list[str]) -> object:
    """A plain command line of a direct command called without typer's parsing (start-up time, see
    :mod:`dsocr.cli._direct`); ``NotImplemented`` when typer must run it."""
    from dsocr.cli._direct import direct_call

    root = app.registered_callback
    if root is not None and root.callback is not None:
        if inspect.signature(root.callback).parameters:
            return NotImplemented
        root.callback()
    try:
        return direct_call(argv, _commands(), os.environ)
    except KeyboardInterrupt:  # as typer does: Ctrl-C is exit code 130
        return ExitCode.INTERRUPTED
    except OSError as exc:  # as typer does: a closed pipe on stdout/stderr is exit code 1, silently
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = cast(TextIO, click.utils.PacifyFlushWrapper(sys.stdout))
        sys.stderr = cast(TextIO, click.utils.PacifyFlushWrapper(sys.stderr))
        return 1


def _run(argv: list[str]) -> int:
    """Run the typer app without its own exit handling; the exit code."""
    result = _call_direct(argv)
    if result is not NotImplemented:
        return _exit_code(result)
    try:
        # standalone_mode=False: click returns (--help, typer.Exit) or raises; we print and exit.
        # typer turns Ctrl-C into Exit(130), which comes back here as the return value 130.
        result = app(args=argv, prog_name="dsocr", standalone_mode=False)
    except typer.Abort:  # Ctrl-C / end of input at a prompt
        result = ExitCode.INTERRUPTED
    except click.exceptions.ClickException as exc:  # usage errors: exit 2 with click's message
        _show_usage_error(exc)
        return exc.exit_code
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
        _quick_exit(code)
    sys.exit(code)


#: Commands whose process, run from the command line, ends without the interpreter's teardown.
QUICK_EXIT_COMMANDS: Final = frozenset({"analyze"})


def _quick_exit(code: int) -> NoReturn:
    """End the process at once: run the atexit handlers, flush stdout and stderr, then skip the interpreter's
    teardown (freeing every module and object one by one took about 35 ms after analyzing the H100 fixture;
    the OS frees the memory at once). For commands that leave no thread running and every file closed."""
    import atexit

    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # stdout closed early (| head): what Python's own exit reports then
        code = code or 120
    os._exit(code)
