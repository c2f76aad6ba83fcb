"""Column lookups without joins of the big frames: id -> value tables, global pid/tid parts, int32 narrowing."""

from __future__ import annotations

import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.sweep import as_int

I64 = pl.Int64


def narrow(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """``frame`` with each int64 column of ``columns`` as int32 where every value fits."""
    bounds = frame.select(
        *(pl.col(c).min().alias(f"{c}_lo") for c in columns), *(pl.col(c).max().alias(f"{c}_hi") for c in columns)
    ).row(0, named=True)
    fits = [
        c
        for c in columns
        if frame.schema[c] == I64
        and all(v is None or -(1 << 31) <= as_int(v) < (1 << 31) for v in (bounds[f"{c}_lo"], bounds[f"{c}_hi"]))
    ]
    return frame.with_columns(pl.col(c).cast(pl.Int32) for c in fits) if fits else frame


def pid_of(col: str) -> pl.Expr:
    return (pl.col(col) // (1 << S.TID_BITS)) % (1 << S.TID_BITS)


def tid_of(col: str) -> pl.Expr:
    return pl.col(col) % (1 << S.TID_BITS)


#: Widest id range looked up through a dense table (4 bytes per possible id).
_MAX_LUT = 1 << 22


def lookup(
    key: str,
    table: pl.DataFrame,
    value: str,
    default: str | None = None,
    key_dtype: pl.DataType | type[pl.DataType] = I64,
) -> pl.Expr:
    """``table[value]`` for ``pl.col(key)`` via a small, unique id (``_sid``) -> value table
    (evaluated only if selected); ids not in the table, and null ids, give ``default``.

    Ids in a narrow range go through a dense position table (one gather, whatever the chunking
    of the column); others through ``replace_strict`` (``key_dtype``: the column's dtype, in
    which the table's ids are given so that the column is not widened row by row).
    """
    values = table[value]
    ids = table["_sid"]
    lo, hi = ids.min(), ids.max()
    if lo is not None and hi is not None and as_int(hi) - as_int(lo) < _MAX_LUT:
        base = as_int(lo)
        # position of each id in the table; one extra slot (the last) holds the default
        positions = pl.repeat(values.len(), as_int(hi) - base + 1, dtype=pl.UInt32, eager=True).scatter(
            ids.cast(I64) - base, pl.int_range(values.len(), dtype=pl.UInt32, eager=True)
        )
        extended = pl.concat([values, pl.Series([default], dtype=values.dtype)])
        fallback = values.len()

        def fetch(keys: pl.Series) -> pl.Series:
            at = keys.cast(I64) - base
            inside = (at >= 0) & (at < positions.len())
            pos = positions.gather(at.set(~inside.fill_null(False), None)).fill_null(fallback)
            return extended.gather(pos)

        return pl.col(key).map_batches(fetch, return_dtype=values.dtype, is_elementwise=True)
    if key_dtype == pl.Int32:
        table = table.filter(pl.col("_sid").is_between(-(1 << 31), (1 << 31) - 1))
    return pl.col(key).replace_strict(
        table["_sid"].cast(key_dtype), table[value], default=default, return_dtype=table.schema[value]
    )
