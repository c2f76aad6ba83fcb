"""Input and output paths: what is refused unopened, and outputs that would replace inputs under any name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsocr.contract.errors import BadInput, ExitCode, InputNotFound
from dsocr.contract.paths import check_input, refuse_overwrite
from dsocr.contract.rundocs import read_doc


def test_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "trace.sqlite"
    os.mkfifo(fifo)
    with pytest.raises(BadInput) as exc:
        check_input(fifo)  # opening it would block this test forever
    assert exc.value.message.startswith(f"{fifo}: is a named pipe (FIFO), not a regular file; pass a file")


def test_missing_and_locked_paths_are_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputNotFound, match="no such file or directory; check the path"):
        check_input(tmp_path / "gone.sqlite")
    with pytest.raises(InputNotFound, match=r"a path above it is a file"):
        (tmp_path / "f").write_text("x")
        check_input(tmp_path / "f" / "t.sqlite")

    def denied(self: Path, **_: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", denied)  # what a directory without search permission does (as non-root)
    with pytest.raises(InputNotFound) as exc:
        check_input(tmp_path / "locked" / "t.sqlite")
    assert exc.value.exit_code == ExitCode.NOT_FOUND
    assert exc.value.message == (
        f"{tmp_path / 'locked' / 't.sqlite'}: cannot be read (permission denied on a directory in its path); "
        "check the permissions"
    )


def test_directories_and_files(tmp_path: Path) -> None:
    assert check_input(tmp_path) is True
    (tmp_path / "a").write_text("x")
    assert check_input(tmp_path / "a") is False
    with pytest.raises(BadInput, match="is a directory, not a file"):
        check_input(tmp_path, directory_ok=False)


def test_output_replacing_an_input_under_any_name(tmp_path: Path) -> None:
    src = tmp_path / "in.sqlite"
    src.write_bytes(b"trace")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link.sqlite").symlink_to(src)
    os.link(src, out / "hard.sqlite")
    for name in ("link.sqlite", "hard.sqlite"):
        with pytest.raises(BadInput) as exc:
            refuse_overwrite([out / name], [src])
        assert exc.value.message == (
            f"{out / name}: is an input of this command (the same file as {src}) and would be overwritten; "
            "choose another --out"
        )
    with pytest.raises(BadInput, match=r"in.sqlite: is an input of this command and would be overwritten"):
        refuse_overwrite([out / ".." / "in.sqlite"], [tmp_path / "in.sqlite"])
    (out / "new.md").write_text("another file")
    refuse_overwrite([out / "new.md", out / "absent.md"], [src])  # other files: fine


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"status": ', "corrupt (not valid JSON: "),
        (b"\xff\xfe\x00binary", "corrupt (not UTF-8 text)"),
        (b"[1, 2]", "corrupt (not a JSON object)"),
    ],
)
def test_run_docs_name_what_is_wrong(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(data)
    doc, said = read_doc(path)
    assert doc is None and said is not None and said.startswith(f"{path}: {problem}")
    assert read_doc(tmp_path / "absent.json") == (None, None)
    os.mkfifo(tmp_path / "timing.json")
    assert read_doc(tmp_path / "timing.json") == (None, f"{tmp_path / 'timing.json'}: not a regular file")
