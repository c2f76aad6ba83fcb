"""Open an nsys export and check it before reading: a readable, complete SQLite file or parquetdir, a supported
export schema, names in ``StringIds``. Every refusal says what to do.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.prefetch import SQLITE_MAGIC
from dsocr.analyze.readers import ParquetDirSource, SqliteSource, TableSource
from dsocr.analyze.trace import SchemaVersion
from dsocr.contract.errors import BadInput, InputNotFound

_REPORT_SUFFIXES = (".nsys-rep", ".qdrep", ".qdstrm")


_HINT = "give an nsys SQLite export (`nsys export --type sqlite REPORT.nsys-rep`) or a parquetdir export"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_source(path: Path) -> SqliteSource | ParquetDirSource:
    """Check ``path`` and open it as an SQLite or parquetdir export (errors say what to do)."""
    if not path.exists():
        raise InputNotFound(f"{path}: no such file or directory; {_HINT}")
    if path.is_dir():
        if not any(path.glob("*.parquet")):
            raise BadInput(f"{path}: is a directory without .parquet files, not an nsys parquetdir export; {_HINT}")
        return ParquetDirSource(path)
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if not header.startswith(SQLITE_MAGIC):
        if path.suffix.lower() in _REPORT_SUFFIXES:
            raise BadInput(
                f"{path}: is an Nsight Systems report, not an SQLite export; run "
                f"`nsys export --type sqlite -o {path.with_suffix('.sqlite')} {path}` and analyze the .sqlite"
            )
        raise BadInput(f"{path}: is not an SQLite file; {_HINT}")
    _check_complete(path, header)
    try:
        return SqliteSource(path)
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"{path}: is a corrupt SQLite file ({one_line(exc)}); export it again") from exc


def _check_complete(path: Path, header: bytes) -> None:
    """Catch a truncated SQLite file from its header's page size and page count."""
    if len(header) < 100:
        raise BadInput(f"{path}: is truncated ({len(header)} bytes); copy or export it again")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[92:96] == header[24:28]
    size = path.stat().st_size
    if page_size and (size % page_size or (header_count_valid and size < pages * page_size)):
        raise BadInput(
            f"{path}: is truncated ({size} bytes, its SQLite header promises {pages * page_size}); "
            "copy or export it again"
        )


def export_meta(source: TableSource) -> dict[str, str]:
    for table in S.META_TABLES:
        if table in source.tables():
            df = source.read(table, {"name": pl.String, "value": pl.String})
            return dict(zip(df["name"].to_list(), df["value"].to_list(), strict=True))
    if source.source_format == "parquetdir" and source.tables() & S.NSYS_TABLES:
        # a parquetdir may come without its metadata table: accept nsys' own tables, version unknown
        return {"EXPORT_SCHEMA_VERSION": S.ASSUMED_SCHEMA}
    raise BadInput(f"{source.path}: is not an Nsight Systems export (no META_DATA_EXPORT table); {_HINT}")


def schema_version(path: Path, meta: dict[str, str]) -> SchemaVersion:
    text = meta.get("EXPORT_SCHEMA_VERSION", "")
    parts = text.split(".") if text else []
    try:
        if len(parts) >= 2:
            nums = [int(p) for p in parts[:3]] + [0] * (3 - len(parts[:3]))
        else:
            nums = [int(meta.get(f"EXPORT_SCHEMA_VERSION_{k}", "0")) for k in ("MAJOR", "MINOR", "MICRO")]
    except ValueError as exc:
        raise BadInput(f"{path}: unreadable export schema version {text!r}; export it again with nsys") from exc
    version = SchemaVersion(*nums)
    if version.major not in S.SUPPORTED_MAJORS:
        product = meta.get("EXPORT_PRODUCT_VERSION", "unknown")
        raise BadInput(
            f"{path}: export schema {version} (nsys {product}) is not supported; dsocr reads schema 3.x "
            "(nsys 2023.4 to 2026.x): export the report with a supported nsys"
        )
    return version


def check_strings(path: Path, tables: frozenset[str], raw: dict[str, pl.DataFrame]) -> None:
    """BadInput when records name things by ``StringIds`` id but the export's StringIds table is missing or empty.

    Every kernel and API call would be nameless (no categories, no launch counts): no honest report.
    """
    if raw["strings"].height:
        return
    refs = {
        "kernels": raw["kernel"]["demangledName"],
        "CUDA API calls": raw["runtime"]["nameId"],
        "NVTX ranges": raw["nvtx"]["textId"],
    }
    named = [what for what, ids in refs.items() if ids.is_not_null().any()]
    if named:
        table = "no StringIds table" if S.STRINGS not in tables else "an empty StringIds table"
        listed = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
        raise BadInput(
            f"{path}: has {table}, so the names of its {listed} are lost (a damaged or hand-edited "
            "export); export it again from the .nsys-rep (`nsys export --type sqlite`)"
        )
