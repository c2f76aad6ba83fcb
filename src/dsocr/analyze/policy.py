"""How ``dsocr analyze`` runs for the size of its inputs, decided once: :class:`RuntimePolicy`.

A small trace's analysis is dominated by start-up and per-query overheads, a large one's by memory.
From the total size of the exports to read, the policy picks polars' allocator settings (jemalloc's
``_RJEM_MALLOC_CONF``, set here and nowhere else, before polars is imported), polars' engine, whether
the largest tables are read while the analysis is imported (:mod:`dsocr.analyze.prefetch`) and whether
the C heap is trimmed after reading. This module imports neither polars nor connectorx.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from dsocr.contract import rundir

#: Exports (in bytes, all inputs together) below this size are "small".
SMALL_TRACE_BYTES: Final = 64 << 20

#: jemalloc settings (polars' allocator) for large traces: blocks of 64 KiB or more come from
#: jemalloc's dedicated arena for large blocks, which hands freed pages back to the OS at once;
#: smaller freed pages are kept 10 ms for reuse (returning every page at once, small ones too,
#: costs seconds of system time on a 2M-kernel trace); a single arena keeps fewer pages aside.
LEAN_MALLOC_CONF: Final = "narenas:1,oversize_threshold:65536,dirty_decay_ms:10,muzzy_decay_ms:0"
#: jemalloc settings for small traces (polars puts its own defaults before them): a single arena, so
#: that pages one thread freed are reused by the others (about 6,000 fewer page faults, ~20 ms, on an
#: 18 MB trace).
SMALL_MALLOC_CONF: Final = "narenas:1"
#: What polars itself puts into ``_RJEM_MALLOC_CONF`` when it is imported: a process started
#: from a Python program that imported polars inherits it, which is not a user's choice.
POLARS_DEFAULT_MALLOC_CONF: Final = "dirty_decay_ms:500,muzzy_decay_ms:1000"
#: The environment variable polars' bundled jemalloc reads its settings from (when polars is loaded).
MALLOC_CONF_VAR: Final = "_RJEM_MALLOC_CONF"
#: polars' own engine setting: a user's value wins over the policy's.
ENGINE_VAR: Final = "POLARS_ENGINE_AFFINITY"

_XZ_FOOTER_MAGIC: Final = b"YZ"


@attrs.frozen
class RuntimePolicy:
    """The run-time settings of one analysis, from the size of its inputs (:meth:`for_inputs`)."""

    input_bytes: int  #: total size of the exports (a .xz counted decompressed)
    small: bool  #: below :data:`SMALL_TRACE_BYTES`
    malloc_conf: str  #: jemalloc settings for polars (:meth:`apply_allocator`)
    in_memory_engine: bool  #: polars' in-memory engine instead of its default (cheaper queries on small frames)
    early_read: Path | None  #: the SQLite export whose largest tables are read while the analysis is imported
    trim_heap: bool  #: hand the C heap's freed pages back after reading (connectorx and sqlite3 allocate there)

    @classmethod
    def for_inputs(cls, paths: Sequence[Path], environ: Mapping[str, str] = os.environ) -> RuntimePolicy:
        """The policy for analyzing ``paths`` (as given on the command line or already resolved; none: the
        bundled sample, a small trace). Missing paths count as empty: the analysis reports them."""
        exports = [export_of(Path(p)) for p in paths]
        total = sum(export_bytes(e) for e in exports)
        small = total < SMALL_TRACE_BYTES
        plain_files = all(e.is_file() for e in exports)
        single = exports[0] if len(exports) == 1 else None
        return cls(
            input_bytes=total,
            small=small,
            malloc_conf=SMALL_MALLOC_CONF if small else LEAN_MALLOC_CONF,
            in_memory_engine=small and plain_files and not environ.get(ENGINE_VAR),
            early_read=single if small and single is not None and single.is_file() and single.suffix != ".xz" else None,
            trim_heap=not small,
        )

    def apply_allocator(self, environ: MutableMapping[str, str] = os.environ) -> bool:
        """Set :attr:`malloc_conf` for polars' jemalloc: only effective before polars is first imported, and
        a value the user set in ``_RJEM_MALLOC_CONF`` wins. Returns whether it took effect."""
        inherited = environ.get(MALLOC_CONF_VAR)
        if "polars" in sys.modules or inherited not in (None, POLARS_DEFAULT_MALLOC_CONF):
            return False
        environ[MALLOC_CONF_VAR] = self.malloc_conf
        return True


def trim_c_heap() -> None:
    """Hand the C heap's freed pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim this way
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def export_of(given: Path) -> Path:
    """The export that :func:`dsocr.analyze.input_files.resolve_input` reads for ``given``: a run directory's
    trace file, else the path itself."""
    if given.is_dir():
        for name in (rundir.TRACE_SQLITE, rundir.TRACE_SQLITE_XZ):
            if (given / name).is_file():
                return given / name
    return given


def export_bytes(export: Path) -> int:
    """Size of an export: a file's (a .xz's decompressed size), a parquetdir's .parquet files; 0 if unreadable."""
    try:
        if export.is_dir():
            return sum(f.stat().st_size for f in export.glob("**/*.parquet"))
        if export.suffix == ".xz":
            unpacked = xz_uncompressed_bytes(export)
            if unpacked is not None:
                return unpacked
        return export.stat().st_size
    except OSError:
        return 0


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """An xz multibyte integer at ``pos``: (value, next position)."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("xz integer too long")


def xz_uncompressed_bytes(path: Path) -> int | None:
    """The decompressed size of a single-stream .xz file, from its index (the .xz format's stream footer and
    index, https://tukaani.org/xz/xz-file-format.txt); None when it cannot be read that way."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - 12))
            footer = fh.read(12)
            if len(footer) != 12 or footer[10:] != _XZ_FOOTER_MAGIC:
                return None
            index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
            if index_size > end - 24:
                return None
            fh.seek(end - 12 - index_size)
            index = fh.read(index_size)
        if index[:1] != b"\x00":
            return None
        records, pos = _varint(index, 1)
        total = 0
        for _ in range(records):
            _, pos = _varint(index, pos)  # unpadded size
            size, pos = _varint(index, pos)
            total += size
        return total
    except (OSError, ValueError, IndexError):
        return None
