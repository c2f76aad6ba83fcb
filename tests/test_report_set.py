"""The report is written as one set (dsocr.report.report_set): all or nothing, no stale files, no leftovers."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from dsocr.cli import main
from dsocr.contract.errors import EnvironmentProblem
from dsocr.report import report_set
from dsocr.report.report_set import write_report_set

OLD = {"analysis.json": "old json", "report.md": "old md", "plots/a.svg": "old svg"}
NEW = {"analysis.json": "new json", "report.md": "new md", "summary.md": "new summary", "plots/b.svg": "new svg"}


def _files(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def _run(argv: list[str]) -> object:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.mark.parametrize("failing_call", [1, 3, 4, 6, 7])
def test_a_failed_rename_leaves_the_whole_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    out = tmp_path / "out"
    write_report_set(out, OLD)
    before = _files(out)
    calls = 0
    real = os.replace

    def flaky(src: str | Path, dst: str | Path) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:  # 1-3 move the old set aside, 4-7 move the new one in
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(report_set.os, "replace", flaky)
    with pytest.raises(EnvironmentProblem) as exc:
        write_report_set(out, NEW)
    assert "nothing of it was written" in exc.value.message and "\n" not in exc.value.message
    assert _files(out) == before  # the old set, whole; no hidden staging or aside directory
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "plots", "report.md"]


def test_a_failed_build_leaves_the_old_set_and_no_new_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_report_set(out, OLD)
    before = _files(out)

    def full_disk(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(EnvironmentProblem):
        write_report_set(out, NEW, {"results.sqlite": full_disk})
    assert _files(out) == before
    with pytest.raises(EnvironmentProblem):
        write_report_set(tmp_path / "fresh", NEW, {"results.sqlite": full_disk})
    assert not (tmp_path / "fresh").exists()  # made for the set, removed with it


def test_the_new_set_replaces_every_older_report_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_report_set(out, {**OLD, "report.html": "old html"})
    (out / "trace.sqlite").write_text("not a report file")
    write_report_set(out, NEW)
    assert _files(out) == {**NEW, "trace.sqlite": "not a report file"}  # old plots/a.svg and report.html gone


def test_an_input_named_like_a_report_file_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    given = out / "results.sqlite"
    given.write_text("the user's export")
    write_report_set(out, {"report.md": "new md"}, inputs=[given])
    assert _files(out) == {"report.md": "new md", "results.sqlite": "the user's export"}


def test_sigterm_while_writing_is_an_interrupt_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_report_set(out, OLD)
    before = _files(out)

    def terminated(path: Path) -> None:
        path.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        write_report_set(out, NEW, {"results.sqlite": terminated})
    assert _files(out) == before
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_format_md_into_a_full_report_leaves_no_older_files(cpu_sqlite: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(["analyze", str(cpu_sqlite), "--out", str(out), "-q"]) == 0
    assert {"analysis.json", "report.html", "results.sqlite", "summary.md"} <= {p.name for p in out.iterdir()}
    assert _run(["analyze", str(cpu_sqlite), "--out", str(out), "-q", "--format", "md"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_analyze_into_a_read_only_directory_fails_whole(cpu_sqlite: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(["analyze", str(cpu_sqlite), "--out", str(out), "-q", "--format", "md"]) == 0
    before = _files(out)
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):  # root ignores the mode
            pytest.skip("running as root: a read-only directory is writable")
        assert _run(["analyze", str(cpu_sqlite), "--out", str(out), "-q"]) == 4
    finally:
        out.chmod(0o700)
    assert _files(out) == before
    shutil.rmtree(out)
