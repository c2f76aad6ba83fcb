"""Input and output paths every command checks: inputs must be regular files (or directories), and an
output must never replace an input, whatever its name (symlinks, hard links and ``..`` resolved)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from dsocr.contract.errors import BadInput, InputNotFound

#: What a non-regular file is called in messages, by its ``stat`` test.
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def input_stat(path: Path, fix: str = "check the path") -> os.stat_result:
    """``stat`` of an input that must exist (symlinks followed), as one clear error when it cannot.

    InputNotFound (exit code 3) when it is missing or a directory on its way cannot be searched.
    """
    try:
        return path.stat()
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such file or directory; {fix}") from None
    except NotADirectoryError:
        raise InputNotFound(f"{path}: no such file or directory (a path above it is a file); {fix}") from None
    except PermissionError:
        raise InputNotFound(
            f"{path}: cannot be read (permission denied on a directory in its path); check the permissions"
        ) from None
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); {fix}") from None


def check_input(path: Path, fix: str = "check the path", directory_ok: bool = True) -> bool:
    """Refuse an input that is missing, unreadable or neither a regular file nor a directory (a FIFO or a
    device would block or never end); return whether it is a directory.

    Never opens the path, so a FIFO cannot make it hang.
    """
    mode = input_stat(path, fix).st_mode
    if stat.S_ISDIR(mode):
        if not directory_ok:
            raise BadInput(f"{path}: is a directory, not a file; {fix}")
        return True
    if not stat.S_ISREG(mode):
        raise BadInput(
            f"{path}: is {_kind(mode)}, not a regular file; pass a file (dsocr reads no pipes or devices: "
            "they could block forever)"
        )
    if not os.access(path, os.R_OK):
        raise InputNotFound(f"{path}: not readable; check its permissions")
    return False


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (symlinks followed); False for anything else or any error."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def refuse_overwrite(outputs: Iterable[Path], inputs: Iterable[Path], fix: str = "choose another --out") -> None:
    """BadInput (one line) when writing any of ``outputs`` would replace one of ``inputs``: the same file by
    device and inode, so another name for it (symlink, hard link, ``..``) is caught too."""
    seen: dict[tuple[int, int], Path] = {}
    for p in inputs:
        fid = _file_id(p)
        if fid is not None:
            seen.setdefault(fid, p)
    if not seen:
        return
    for out in outputs:
        fid = _file_id(out)
        if fid is not None and fid in seen:
            given = seen[fid]
            same = "" if Path(os.path.abspath(out)) == Path(os.path.abspath(given)) else f" (the same file as {given})"
            raise BadInput(f"{out}: is an input of this command{same} and would be overwritten; {fix}")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says that a write failed for want of room or at the device: a full disk, quota or file
    size limit, or an I/O error (SQLite says ``disk I/O error`` when a write past the size limit fails)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
    return type(exc).__module__ == "sqlite3" and ("disk is full" in str(exc) or "disk I/O error" in str(exc))
