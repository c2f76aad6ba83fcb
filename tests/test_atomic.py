"""Atomic writes: the file appears whole or not at all; an unwritable place is one clear error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsocr.contract import atomic
from dsocr.contract.errors import EnvironmentProblem, ExitCode


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
