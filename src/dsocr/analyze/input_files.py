"""Inputs of ``dsocr analyze``: a run directory or export resolved to its trace (a FIFO, a device or an
unreadable path refused unopened), ``.xz`` exports decompressed once into the cache (``~/.cache/dsocr``;
nothing left there on failure), the bundled sample, and the files an analysis reads (no output may replace
one of them)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, EnvironmentProblem, InputNotFound
from dsocr.contract.paths import check_input, is_disk_full, is_regular_file

#: The bundled sample run directory (a real dsocr capture on an H100).
SAMPLE_RESOURCE: Final = ("data", "sample", "h100-gundam-2p2r")

#: The first bytes of every SQLite database file.
SQLITE_HEADER: Final = b"SQLite format 3\x00"


def cache_dir() -> Path:
    """Where decompressed traces are kept: ``$DSOCR_CACHE_DIR``, else ``$XDG_CACHE_HOME/dsocr``."""
    env = os.environ.get("DSOCR_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dsocr"


def sample_trace() -> Path:
    """The bundled sample run directory (``trace.sqlite.xz``, manifest and timing files) shipped with the package."""
    from importlib.resources import files

    res = files("dsocr").joinpath(*SAMPLE_RESOURCE)
    path = Path(str(res))
    if not (path / rundir.TRACE_SQLITE_XZ).is_file():
        raise InputNotFound(
            f"{path}: the bundled sample run is missing from this install; reinstall dsocr or pass a trace path"
        )
    return path


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()


def _decompress_into(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst`` through a hidden temp file; nothing is left in the cache on any failure."""
    import lzma
    import tempfile

    made = not dst.parent.exists()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".part-")
        with lzma.open(src) as fin, os.fdopen(fd, "wb") as fout:
            head = fin.read(len(SQLITE_HEADER))
            if head != SQLITE_HEADER:
                raise BadInput(
                    f"{src}: decompresses to something that is not an SQLite file; pass an nsys SQLite export "
                    "(`nsys export --type sqlite`, optionally xz-compressed)"
                )
            fout.write(head)
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
        os.replace(tmp, dst)
        tmp = None
    except (lzma.LZMAError, EOFError) as exc:
        raise BadInput(
            f"{src}: not a valid .xz file ({exc}); re-download it or pass the decompressed .sqlite"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if made:
                _remove_if_empty(dst.parent)


def _decompress_xz(src: Path) -> Path:
    """Decompress ``src`` into the cache (keyed by its content hash) and return the copy.

    Errors name ``src`` (the user's file), never the cache copy; a cache that cannot be written is
    skipped for the temporary directory, a full one is one clear error.
    """
    import hashlib

    h = hashlib.sha256()
    with src.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    name = src.name[: -len(".xz")] or "trace.sqlite"
    for base in _cache_bases():
        dst = base / h.hexdigest()[:16] / name
        if is_regular_file(dst):
            return dst
        try:
            _decompress_into(src, dst)
        except OSError as exc:
            if is_disk_full(exc):
                raise EnvironmentProblem(
                    f"{src}: cannot decompress it into the cache {base} ({exc.strerror}); free some space there "
                    "or set DSOCR_CACHE_DIR to a place with room"
                ) from None
            continue  # not writable here: the next place
        return dst
    raise BadInput(f"{src}: no writable cache directory to decompress it into; set DSOCR_CACHE_DIR")


def forget_cached(path: Path) -> None:
    """Remove the decompressed copy ``path`` from the cache (it turned out not to be a usable export)."""
    for base in _cache_bases():
        if path.parent.parent == base:
            with contextlib.suppress(OSError):
                path.unlink()
            _remove_if_empty(path.parent)


def _cache_bases() -> tuple[Path, Path]:
    import tempfile

    return cache_dir(), Path(tempfile.gettempdir()) / "dsocr-cache"


def resolve_input(given: Path) -> Path:
    """The export to load for a path given on the command line.

    Accepts an nsys SQLite export, a ``.sqlite.xz``, a run directory (``trace.sqlite`` or
    ``trace.sqlite.xz`` inside) or a ``parquetdir`` export directory. A FIFO, a device or an
    unreadable path is refused without being opened.
    """
    if check_input(given):
        for name in (rundir.TRACE_SQLITE, rundir.TRACE_SQLITE_XZ):
            if os.path.lexists(given / name):
                return resolve_input(given / name)
        if any(given.glob("*.parquet")) or any(given.glob("*/*.parquet")):
            return given
        if os.path.lexists(given / rundir.TRACE_REP):
            raise BadInput(
                f"{given}: has {rundir.TRACE_REP} but no {rundir.TRACE_SQLITE}; export it first: dsocr export {given}"
            )
        raise BadInput(
            f"{given}: directory holds no {rundir.TRACE_SQLITE} (nor a parquetdir export); "
            "pass a run directory or an nsys SQLite export"
        )
    if given.suffix == ".xz":
        return _decompress_xz(given)
    return given


#: The files of a run directory an analysis reads beside the trace.
RUN_DOCS: Final = (rundir.MANIFEST, rundir.TIMING, rundir.CALIBRATION)


def files_read(paths: Sequence[Path], calibration: Path | None = None) -> list[Path]:
    """Every file an analysis of ``paths`` reads: the traces, and the run files beside them (manifest,
    timing files, calibration) or inside the given directories; no output may replace one of them."""
    out: list[Path] = [calibration] if calibration is not None else []
    for given in paths:
        directory = given if given.is_dir() else given.parent
        if not given.is_dir():
            out.append(given)
        else:
            out += [given / rundir.TRACE_SQLITE, given / rundir.TRACE_SQLITE_XZ, *given.glob("*.parquet")]
            out += given.glob("*/*.parquet")
        out += [directory / name for name in RUN_DOCS]
        out += directory.glob(rundir.TIMING_BASELINE_GLOB)
        out.append(directory / rundir.TIMING_BASELINE)
    return out
