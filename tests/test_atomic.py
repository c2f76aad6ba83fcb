"""Atomic writes: the file appears whole or not at all; an unwritable place is one clear error."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from dsocr.contract import atomic
from dsocr.contract.errors import BadUsage, EnvironmentProblem, ExitCode


def test_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic.write_text(target, "first")
    atomic.write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failure_inside_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_place_is_one_line_environment_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(EnvironmentProblem) as exc:
        atomic.write_text(blocker / "report.md", "text")
    assert exc.value.exit_code == ExitCode.ENVIRONMENT
    assert str(blocker / "report.md") in exc.value.message
    assert "cannot write there" in exc.value.message and "\n" not in exc.value.message


def test_directory_as_target_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BadUsage) as exc:
        atomic.write_text(tmp_path, "text")
    assert exc.value.message == f"{tmp_path}: is a directory; give a file name, not a directory"


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_full_disk_while_writing_is_environment(tmp_path: Path, errno_: int) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(EnvironmentProblem) as exc, atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno_, os.strerror(errno_))
    assert exc.value.exit_code == ExitCode.ENVIRONMENT
    assert (
        exc.value.message == f"{target}: cannot be written ({os.strerror(errno_)}); free some space or write elsewhere"
    )
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_sqlite_disk_full_is_environment(tmp_path: Path) -> None:
    full = r"results.sqlite: cannot be written \(database or disk is full\)"
    with pytest.raises(EnvironmentProblem, match=full), atomic.atomic_path(tmp_path / "results.sqlite"):
        raise sqlite3.OperationalError("database or disk is full")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_inside_pass_through(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic.atomic_path(tmp_path / "x"):
        raise PermissionError(errno.EACCES, "reading an input")


def test_sigterm_while_writing_leaves_no_temp_file(tmp_path: Path) -> None:
    from dsocr.cli import _stop_on_sigterm

    before = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with pytest.raises(KeyboardInterrupt), atomic.atomic_path(tmp_path / "results.sqlite") as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    finally:
        signal.signal(signal.SIGTERM, before)
    assert list(tmp_path.iterdir()) == []


def test_signals_held_act_after_the_block() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), atomic.signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # a held signal does not interrupt the block
        done.append("renamed")
    assert done == ["renamed"]
