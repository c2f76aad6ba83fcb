"""Read an SQLite export's largest tables while the analysis is still being imported (start-up time).

``dsocr analyze`` spends its first ~0.15 s importing polars and the analysis modules on one core;
:func:`start` reads the API calls, NVTX ranges and kernels meanwhile on the other core (connectorx's
public ``read_sql(..., return_type="arrow")``, in a thread: connectorx reads with the GIL released),
and :meth:`dsocr.analyze.readers.SqliteSource.read` takes a result whose query is exactly its own
(:func:`take`) instead of reading again. Whether to read early at all is the runtime policy's call
(:class:`dsocr.analyze.policy.RuntimePolicy`). This module imports neither polars nor connectorx at
import time.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dsocr.analyze import schema as S

if TYPE_CHECKING:
    import pyarrow as pa

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
_lock = threading.Lock()
_pending: dict[tuple[str, str], Future[pa.Table]] = {}


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


def read_arrow(uri: str, sql: str) -> pa.Table:
    """connectorx's Arrow table of one query (raises RuntimeError for what connectorx cannot read or type)."""
    import connectorx as cx

    return cx.read_sql(uri, sql, return_type="arrow")


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


def take(path: Path, sql: str) -> pa.Table | None:
    """The early result of ``sql`` on ``path`` (waiting for it if it is being read), taken out; None if there
    is none or its read had not started yet (it is dropped: the caller reads it in parallel). An early read
    that failed raises its error here, as the caller's own read would have."""
    with _lock:
        future = _pending.pop((str(path.resolve()), sql), None)
    if future is None or future.cancel():  # not started yet: the caller reads it now, beside its other reads
        return None
    return future.result()


def discard() -> None:
    """Drop the results nobody took, waiting for the reads still running (their errors do not matter: nobody
    needs those tables)."""
    with _lock:
        futures = list(_pending.values())
        _pending.clear()
    for future in futures:
        future.cancel()
    wait(futures)
