"""Layer 7: the ``dsocr`` command line (typer), thin: parse, call, print.

Each module in this package registers its commands on :data:`dsocr.cli.app.app`; they are
discovered at start-up so a new command is one new file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback

from dsocr.cli.app import app
from dsocr.contract.errors import DsocrError, ExitCode

_NOT_COMMANDS = {"app", "common"}


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _NOT_COMMANDS:
            continue
        importlib.import_module(f"{__name__}.{info.name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dsocr`` console script: one line per error, documented exit codes."""
    _register_commands()
    code: int = ExitCode.OK
    try:
        # click handles its own usage errors (exit 2) and --help; ours come out as one line.
        app(args=argv, prog_name="dsocr", standalone_mode=True)
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
    sys.exit(code)
