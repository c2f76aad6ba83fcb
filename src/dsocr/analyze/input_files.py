"""Inputs of ``dsocr analyze``: a run directory or export resolved to its trace, ``.xz`` exports
decompressed once into the cache (``~/.cache/dsocr``), the bundled sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    pass
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, InputNotFound

#: The bundled sample run directory (a real dsocr capture on an H100).
SAMPLE_RESOURCE: Final = ("data", "sample", "h100-gundam-2p2r")


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


def _decompress_xz(src: Path) -> Path:
    """Decompress ``src`` into the cache (keyed by its content hash) and return the copy."""
    import hashlib
    import lzma
    import tempfile

    h = hashlib.sha256()
    with src.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    name = src.name[: -len(".xz")] or "trace.sqlite"
    for base in (cache_dir(), Path(tempfile.gettempdir()) / "dsocr-cache"):
        dst = base / h.hexdigest()[:16] / name
        if dst.is_file():
            return dst
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".part-")
        try:
            with lzma.open(src) as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
            os.replace(tmp, dst)
        except (lzma.LZMAError, EOFError) as exc:
            raise BadInput(
                f"{src}: not a valid .xz file ({exc}); re-download it or pass the decompressed .sqlite"
            ) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dst
    raise BadInput(f"{src}: no writable cache directory to decompress it into; set DSOCR_CACHE_DIR")


def resolve_input(given: Path) -> Path:
    """The export to load for a path given on the command line.

    Accepts an nsys SQLite export, a ``.sqlite.xz``, a run directory (``trace.sqlite`` or
    ``trace.sqlite.xz`` inside) or a ``parquetdir`` export directory.
    """
    if not given.exists():
        raise InputNotFound(f"{given}: no such file or directory; check the path")
    if given.is_dir():
        for name in (rundir.TRACE_SQLITE, rundir.TRACE_SQLITE_XZ):
            if (given / name).is_file():
                return resolve_input(given / name)
        if any(given.glob("*.parquet")) or any(given.glob("*/*.parquet")):
            return given
        if (given / rundir.TRACE_REP).is_file():
            raise BadInput(
                f"{given}: has {rundir.TRACE_REP} but no {rundir.TRACE_SQLITE}; export it first: dsocr export {given}"
            )
        raise BadInput(
            f"{given}: directory holds no {rundir.TRACE_SQLITE} (nor a parquetdir export); "
            "pass a run directory or an nsys SQLite export"
        )
    if not os.access(given, os.R_OK):
        raise InputNotFound(f"{given}: not readable; check its permissions")
    if given.suffix == ".xz":
        return _decompress_xz(given)
    return given
