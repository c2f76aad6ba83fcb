"""Table readers: an nsys SQLite export (connectorx, sqlite3 for what it cannot type) or a ``parquetdir``.

Both give the same thing: the set of tables, each table's columns, and a table read as a
polars frame with only the requested columns (a column the export lacks comes back as nulls
of the requested dtype, so older schemas load through the same code).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import polars as pl

from dsocr.analyze import prefetch
from dsocr.analyze.prefetch import ROWID, Where, quote

if TYPE_CHECKING:
    import pyarrow as pa

#: Requested columns of one table: name -> dtype.
Columns = Mapping[str, pl.DataType | type[pl.DataType]]
#: One read: table, columns and an optional row filter.
Request = tuple[str, Columns, "Where | None"]


def _clamp(value: object) -> int | None:
    if not isinstance(value, int) or not -(1 << 63) <= value < (1 << 63):
        return None
    return value


class TableSource(Protocol):
    """Where tables come from."""

    path: Path
    source_format: str

    def tables(self) -> frozenset[str]:
        """Names of the tables in the export."""
        ...

    def columns(self, table: str) -> tuple[str, ...]:
        """Column names of one table (empty if the table is absent)."""
        ...

    def read(self, table: str, columns: Columns, where: Where | None = None) -> pl.DataFrame:
        """The table with exactly ``columns`` (missing ones as typed nulls), rows kept by ``where``."""
        ...

    def read_many(self, requests: Mapping[str, Request]) -> dict[str, pl.DataFrame]:
        """Several reads at once (in parallel where it helps): key -> (table, columns, where)."""
        ...

    def first_non_null(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        """``rowid`` and the first non-null of ``columns`` (as i64), only rows where one is set."""
        ...


def _finish(df: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    try:
        if df.schema == pl.Schema(columns):
            return df  # already exactly the requested columns and dtypes
    except TypeError:  # a dtype not fully given (pl.Datetime, pl.List): the casts below settle it
        pass
    exprs = [
        (pl.col(name) if name in df.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in columns.items()
    ]
    return df.select(exprs)


def arrow_frame(table: pa.Table) -> pl.DataFrame:
    """connectorx's Arrow table as a polars frame (zero-copy: its record batches stay chunks)."""
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)  # a Table gives a frame (a single array would give a Series)
    return frame


class SqliteSource:
    """An nsys SQLite export, read with connectorx (fast, columnar) or sqlite3."""

    source_format = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uri = prefetch.sqlite_uri(path)
        self._con = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        self._columns: dict[str, tuple[str, ...]] = {}
        rows = self._con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
        self._tables = frozenset(str(r[0]) for r in rows)

    def close(self) -> None:
        """Close the metadata connection."""
        self._con.close()

    def tables(self) -> frozenset[str]:
        """Names of the tables in the export."""
        return self._tables

    def columns(self, table: str) -> tuple[str, ...]:
        """Column names of one table (empty if the table is absent)."""
        if table not in self._tables:
            return ()
        if table not in self._columns:
            rows = self._con.execute(f"PRAGMA table_info({quote(table)})").fetchall()
            self._columns[table] = tuple(str(r[1]) for r in rows)
        return self._columns[table]

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Run a small query with sqlite3 (metadata, GPU info)."""
        return list(self._con.execute(sql).fetchall())

    def _sql(self, table: str, columns: Columns, where: Where | None = None) -> str | None:
        present = [c for c in columns if c in self.columns(table) or c == ROWID]
        if table not in self._tables or not present:
            return None
        return prefetch.select_sql(table, present, where)

    def first_non_null(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        """``rowid`` and the first non-null of ``columns`` (as i64), only rows where one is set."""
        present = [c for c in columns if c in self.columns(table)]
        if not present:
            return pl.DataFrame(schema={ROWID: pl.Int64, "value": pl.Int64})
        cols = ", ".join(quote(c) for c in present)
        where = " OR ".join(f"{quote(c)} IS NOT NULL" for c in present)
        rows = self.query(f"SELECT rowid, coalesce({cols}) FROM {quote(table)} WHERE {where}")
        return pl.DataFrame(
            {ROWID: [r[0] for r in rows], "value": [_clamp(r[1]) for r in rows]},
            schema={ROWID: pl.Int64, "value": pl.Int64},
        )

    def _read_sqlite3(self, sql: str) -> pl.DataFrame:
        con = sqlite3.connect(self._uri, uri=True)
        try:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            con.close()
        if not rows:
            return pl.DataFrame({n: [] for n in names})
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

    def _read_connectorx(self, sql: str) -> pl.DataFrame:
        table = prefetch.take(self.path, sql)  # read while the analysis was imported
        if table is None:
            table = prefetch.read_arrow(prefetch.connectorx_uri(self.path), sql)
        return arrow_frame(table)

    def read(self, table: str, columns: Columns, where: Where | None = None) -> pl.DataFrame:
        """The table with exactly ``columns`` (missing ones as typed nulls), rows kept by ``where``."""
        sql = self._sql(table, columns, where)
        if sql is None:
            return _finish(pl.DataFrame(), columns).clear()
        try:
            df = self._read_connectorx(sql)
        except RuntimeError:  # connectorx cannot type a column (SQLite's types are per value): sqlite3 reads
            df = self._read_sqlite3(sql)  # anything, or raises sqlite3's own error on a corrupt file
        return _finish(df, columns)

    def read_many(self, requests: Mapping[str, Request]) -> dict[str, pl.DataFrame]:
        """Several reads in parallel threads (connectorx and sqlite3 release the GIL)."""
        keys = list(requests)
        with ThreadPoolExecutor(max_workers=min(4, max(1, len(keys)))) as pool:
            frames = list(pool.map(lambda k: self.read(*requests[k]), keys))
        return dict(zip(keys, frames, strict=True))


class ParquetDirSource:
    """An ``nsys export --type parquetdir`` directory: one ``TABLE.parquet`` per table."""

    source_format = "parquetdir"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files = {p.name[: -len(".parquet")]: p for p in path.glob("*.parquet") if p.is_file()}
        self._columns: dict[str, tuple[str, ...]] = {}

    def close(self) -> None:
        """Nothing to close."""

    def tables(self) -> frozenset[str]:
        """Names of the tables in the export."""
        return frozenset(self._files)

    def columns(self, table: str) -> tuple[str, ...]:
        """Column names of one table (empty if the table is absent)."""
        if table not in self._files:
            return ()
        if table not in self._columns:
            self._columns[table] = tuple(pl.read_parquet_schema(self._files[table]))
        return self._columns[table]

    def read(self, table: str, columns: Columns, where: Where | None = None) -> pl.DataFrame:
        """The table with exactly ``columns`` (missing ones as typed nulls), rows kept by ``where``."""
        present = [c for c in columns if c in self.columns(table)]
        if not present and not (ROWID in columns and table in self._files):
            return _finish(pl.DataFrame(), columns).clear()
        lf = pl.scan_parquet(self._files[table], row_index_name=ROWID, row_index_offset=1)
        if where is not None and where[0] in self.columns(table):
            lf = lf.filter(pl.col(where[0]).is_in(list(where[1])))
        return _finish(lf.select(present + ([ROWID] if ROWID in columns else [])).collect(), columns)

    def first_non_null(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        """``rowid`` and the first non-null of ``columns`` (as i64), only rows where one is set."""
        present = [c for c in columns if c in self.columns(table)]
        if not present:
            return pl.DataFrame(schema={ROWID: pl.Int64, "value": pl.Int64})
        df = pl.read_parquet(self._files[table], columns=present, row_index_name=ROWID, row_index_offset=1)
        value = pl.coalesce(*(pl.col(c).cast(pl.Int64, strict=False) for c in present))
        return df.select(pl.col(ROWID).cast(pl.Int64), value.alias("value")).drop_nulls("value")

    def read_many(self, requests: Mapping[str, Request]) -> dict[str, pl.DataFrame]:
        """Several reads (polars parallelizes each one internally)."""
        return {key: self.read(*request) for key, request in requests.items()}
