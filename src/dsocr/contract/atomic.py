"""Write outputs atomically: a temp file in the same directory, then ``os.replace``.

A crash, Ctrl-C or SIGTERM never leaves a half-written report behind (the CLI turns SIGTERM into
the same exception as Ctrl-C, so the temp file is removed either way). A full disk is one clear
error, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from dsocr.contract.errors import BadUsage, DsocrError, EnvironmentProblem
from dsocr.contract.paths import is_disk_full


def write_failure(target: Path, exc: BaseException) -> DsocrError:
    """The one-line error for a failed write of ``target`` (exit code 5, ENVIRONMENT): a full disk, or a place
    that cannot be written (no permission, a read-only file system, a directory that cannot be searched)."""
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    if is_disk_full(exc):
        return EnvironmentProblem(f"{target}: cannot be written ({reason}); free some space or write elsewhere")
    return EnvironmentProblem(f"{target}: cannot write there ({reason}); choose another output directory or file")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    if os.path.isdir(target):
        raise BadUsage(f"{target}: is a directory; give a file name, not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_failure(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        try:
            yield tmp_path
        except Exception as exc:
            if is_disk_full(exc):
                raise write_failure(target, exc) from None
            raise
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise write_failure(target, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text(target: Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


#: The signals held back while several renames must happen together.
_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs (a few renames that belong together); one that
    came meanwhile acts right after it. Outside the main thread it does nothing (signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        came.append((signum, frame))

    before: dict[int, Any] = {}
    try:
        for sig in _HELD:
            before[sig] = signal.signal(sig, hold)
        yield
    finally:
        for held, handler in before.items():
            signal.signal(held, handler)
        if came:
            signum, frame = came[0]
            handler = before.get(signum)
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
