"""Errors a user can cause, each with its documented exit code (docs/exit-codes.md).

The CLI turns a :class:`DsocrError` into one line on stderr and its exit code, never a
traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of every dsocr command."""

    OK = 0
    INTERNAL = 1  #: a bug in dsocr: please report it (run with --verbose for the traceback)
    USAGE = 2  #: bad command line (unknown option, bad value, an output path of the wrong kind)
    NOT_FOUND = 3  #: an input path does not exist or cannot be read
    BAD_INPUT = 4  #: an input exists but is not what was expected (not an nsys export, corrupt, ...)
    ENVIRONMENT = 5  #: the machine lacks something the command needs (nsys, GPU, torch, ...)
    RUN_FAILED = 6  #: the profiled program or an external tool failed (OOM, export failure)
    DOCTOR_PROBLEMS = 7  #: ``dsocr doctor`` found that capture cannot work here
    INTERRUPTED = 130  #: Ctrl-C


class DsocrError(Exception):
    """An error with a one-line message that names the problem and the fix."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self.args[0])


class BadUsage(DsocrError):
    """A command line that cannot work: a bad option value or combination, an output path of the wrong kind."""

    exit_code = ExitCode.USAGE


class InputNotFound(DsocrError):
    """An input path does not exist or is unreadable."""

    exit_code = ExitCode.NOT_FOUND


class BadInput(DsocrError):
    """An input is not what the command expects."""

    exit_code = ExitCode.BAD_INPUT


class EnvironmentProblem(DsocrError):
    """The machine lacks a tool, package or device the command needs."""

    exit_code = ExitCode.ENVIRONMENT


class RunFailed(DsocrError):
    """A profiled program or external tool failed."""

    exit_code = ExitCode.RUN_FAILED
