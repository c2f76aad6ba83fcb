"""Read an SQLite export's largest tables while the analysis is still being imported (start-up time).

``dsocr analyze`` spends its first ~0.15 s importing polars and the analysis modules on one core;
:func:`start` reads the API calls, NVTX ranges and kernels meanwhile on the other core (connectorx,
in a thread that releases the GIL), and :meth:`dsocr.analyze.readers.SqliteSource.read` takes a result whose query
is exactly its own (:func:`take`) instead of reading again. This module imports neither polars
nor connectorx at import time.
"""

from __future__ import annotations

import ctypes
import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from dsocr.analyze import schema as S

#: Pseudo-column: SQLite's rowid, or the 1-based row number of a Parquet table.
ROWID: Final = "rowid"
#: A row filter: (integer column, allowed values).
Where = tuple[str, tuple[int, ...]]

#: The reads started early: key -> (table, columns, row filter); the loader gives their dtypes.
EARLY_READS: Final[dict[str, tuple[str, tuple[str, ...], Where | None]]] = {
    "runtime": (S.RUNTIME, ("start", "end", "globalTid", "correlationId", "nameId"), None),
    "nvtx": (
        S.NVTX,
        (ROWID, "start", "end", "eventType", "text", "textId", "domainId", "globalTid", "endGlobalTid"),
        ("eventType", S.RANGE_EVENTS),
    ),
    "kernel": (S.KERNEL, ("start", "end", "correlationId", "globalPid", "demangledName"), None),
}

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
SCHEMA_CAPSULE: Final = b"arrow_schema"
ARRAY_CAPSULE: Final = b"arrow_array"
#: Byte offset of ``release`` in the C structs ArrowSchema and ArrowArray (Arrow C data interface).
_RELEASE_OFFSET: Final = {SCHEMA_CAPSULE: 56, ARRAY_CAPSULE: 64}

#: connectorx's answer to one query: column names and per record batch one (array, schema) pointer pair per column.
Result = tuple[list[str], list[list[tuple[int, int]]]]

_lock = threading.Lock()
_pending: dict[tuple[str, str], Future[Result]] = {}


def quote(name: str) -> str:
    """An SQL identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def select_sql(table: str, columns: Sequence[str], where: Where | None = None) -> str:
    """``SELECT columns FROM table`` (``WHERE column IN (values)``): the query text of a read."""
    sql = f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table)}"
    if where is not None:
        column, values = where
        sql += f" WHERE {quote(column)} IN ({', '.join(str(int(v)) for v in values)})"
    return sql


def sqlite_uri(path: Path) -> str:
    """sqlite3's read-only URI of an export (``immutable``: no locking, no journal look-ups)."""
    return "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro&immutable=1"


def connectorx_uri(path: Path) -> str:
    """connectorx's URI of an SQLite file (a plain, percent-encoded path after ``sqlite://``)."""
    return "sqlite://" + urllib.parse.quote(str(path.resolve()))


def release(ptr: int, name: bytes) -> None:
    """Call an Arrow C struct's ``release`` callback unless it was moved out (NULL)."""
    callback = ctypes.c_void_p.from_address(ptr + _RELEASE_OFFSET[name]).value
    if callback:
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(callback)(ptr)


def release_result(result: Result) -> None:
    """Release every Arrow struct of a connectorx result nobody imported."""
    for chunk in result[1]:
        for array_ptr, schema_ptr in chunk:
            release(array_ptr, ARRAY_CAPSULE)
            release(schema_ptr, SCHEMA_CAPSULE)


def _queries(path: Path) -> list[str]:
    """The queries of :data:`EARLY_READS` as the SQLite reader will write them (only present columns)."""
    con = sqlite3.connect(sqlite_uri(path), uri=True)
    try:
        tables = {str(r[0]) for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        out = []
        for table, columns, where in EARLY_READS.values():
            if table not in tables:
                continue
            have = {str(r[1]) for r in con.execute(f"PRAGMA table_info({quote(table)})")}
            present = [c for c in columns if c in have or c == ROWID]
            if present:
                out.append(select_sql(table, present, where))
        return out
    finally:
        con.close()


def read_arrow(uri: str, sql: str) -> Result:
    """connectorx's Arrow result of one query (the C structs' pointers; nothing imported from pyarrow)."""
    from connectorx.connectorx import read_sql  # what connectorx.read_sql calls

    names, chunks = read_sql(
        uri, "arrow", protocol="binary", queries=[sql], partition_query=None, pre_execution_queries=None
    )
    return list(names), [list(chunk) for chunk in chunks]


def start(path: Path) -> bool:
    """Start reading :data:`EARLY_READS` of the SQLite export ``path`` in a thread; False (nothing
    started) for anything else or on any error (the loader then reads as usual)."""
    try:
        with path.open("rb") as fh:
            if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return False
        queries = _queries(path)
    except (OSError, sqlite3.Error):
        return False
    uri = connectorx_uri(path)
    key = str(path.resolve())
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsocr-prefetch")  # one core: the other imports
    with _lock:
        for sql in queries:
            _pending[(key, sql)] = pool.submit(read_arrow, uri, sql)
    pool.shutdown(wait=False)
    return bool(queries)


def take(path: Path, sql: str) -> Result | None:
    """The early result of ``sql`` on ``path`` (waiting for it if it is being read), taken out; None if there
    is none, it failed, or its read had not started yet (it is dropped: the caller reads it in parallel)."""
    with _lock:
        future = _pending.pop((str(path.resolve()), sql), None)
    if future is None or future.cancel():  # not started yet: the caller reads it now, beside its other reads
        return None
    try:
        return future.result()
    except Exception:  # the reader reads it again and reports what is wrong
        return None


def discard() -> None:
    """Drop the results nobody took (waiting for the reads still running), releasing their buffers."""
    with _lock:
        futures = list(_pending.values())
        _pending.clear()
    for future in futures:
        try:
            result: Any = future.result()
        except Exception:
            continue
        release_result(result)
