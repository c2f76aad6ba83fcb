"""Build a large synthetic nsys SQLite export by replicating a real one in time.

    python benchmarks/make_synthetic_trace.py SRC.sqlite[.xz] OUT.sqlite --scale 30
    python benchmarks/make_synthetic_trace.py SRC.sqlite OUT.sqlite --scale 4 --op-ranges 8

Replica k (0 <= k < scale) is the source's event rows shifted by k * span in time, with
correlation ids shifted by k * (max id + 1) and start/end range ids likewise, so that every
GPU op still joins exactly its own API call and no two replicas overlap. Metadata rows
(StringIds, threads, processes, GPU info, NVTX domain/category/thread names) are kept once;
ANALYSIS_DETAILS is stretched to the new duration. On the H100 fixture (71,440 kernels,
167,731 runtime rows, 30,646 NVTX ranges) `--scale 30` gives 2.14M kernels, 5.03M runtime
rows and 0.92M NVTX ranges.

`--op-ranges R` first adds, on the source, R nested NVTX push/pop ranges around every API call
inside a `decode_step` range that launches a GPU op, named like PyTorch's `emit_nvtx` ranges
(`aten::mm, seq = 7, op_id = 123, sizes = [[1, 1280], [1280, 1280]], input_op_ids = ...`), so
that every decode-step kernel lies in R operator ranges (`--no-op-id` leaves out the unique
`op_id`, so that ranges group into a few names). The whole SQL work runs inside SQLite.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

#: NVTX event types that describe metadata (category/thread names, domain create/destroy...):
#: kept once, never replicated (a duplicated domain row would duplicate every range in a join).
NVTX_METADATA_TYPES = (33, 39, 75, 76, 77, 78)
#: NVTX event types of ranges (push/pop, start/end, and their NVTXT forms).
NVTX_RANGE_TYPES = (59, 60, 70, 71)
#: Tables with a start column that are not event streams.
_NOT_EVENTS = ("TARGET_INFO", "ANALYSIS", "META_DATA", "ENUM_")
#: Gap between replicas (ns).
GAP_NS = 1_000_000
#: Operator names used for the synthetic emit_nvtx ranges, outermost first (cycled).
OP_NAMES = ("linear", "matmul", "mm", "addmm", "bmm", "mul", "add", "silu", "softmax", "copy_", "to", "view")

_GPU_OP_TABLES = ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET")


def _tables(con: sqlite3.Connection, schema: str = "main") -> list[str]:
    return [r[0] for r in con.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name")]


def _columns(con: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA {schema}.table_info("{table}")')]


def event_tables(con: sqlite3.Connection, schema: str = "main") -> list[str]:
    """Tables holding timed event rows (a `start` column), the ones to replicate."""
    return [
        t
        for t in _tables(con, schema)
        if not t.startswith(_NOT_EVENTS) and {"start", "end"} <= set(_columns(con, t, schema))
    ]


def _max(con: sqlite3.Connection, tables: list[str], column: str, schema: str = "main") -> int:
    best = 0
    for t in tables:
        if column in _columns(con, t, schema):
            (value,) = con.execute(f'SELECT max("{column}") FROM {schema}."{t}"').fetchone()
            best = max(best, int(value or 0))
    return best


def _min_start(con: sqlite3.Connection, tables: list[str], schema: str = "main") -> int:
    values = [con.execute(f'SELECT min(start) FROM {schema}."{t}"').fetchone()[0] for t in tables]
    return min(int(v) for v in values if v is not None)


def _replica_select(con: sqlite3.Connection, table: str, shift: int, corr: int, rng: int) -> str:
    """SELECT list turning a source row into replica `k` (a column of the CTE `ks`)."""
    parts = []
    for col in _columns(con, table, "src"):
        if col in ("start", "end", "timestamp"):
            parts.append(f'"{col}" + ks.k * {shift}')
        elif col == "correlationId":
            parts.append(f'"{col}" + ks.k * {corr}')
        elif col == "rangeId":
            parts.append(f'"{col}" + ks.k * {rng}')
        else:
            parts.append(f'"{col}"')
    return ", ".join(parts)


def replicate(src: Path, dst: Path, scale: int) -> None:
    """Write `dst`: `src` with its event rows replicated `scale` times, shifted in time and ids."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -262144")
        con.execute("ATTACH DATABASE ? AS src", (str(src),))
        tables = event_tables(con, "src")
        t0 = _min_start(con, tables, "src")
        t1 = _max(con, tables, "end", "src")
        shift = t1 - t0 + GAP_NS
        corr = _max(con, tables, "correlationId", "src") + 1
        rng = _max(con, tables, "rangeId", "src") + 1
        ranges = ",".join(map(str, NVTX_RANGE_TYPES))
        con.execute("BEGIN")
        if scale > 1:
            con.execute("CREATE TEMP TABLE ks (k INTEGER PRIMARY KEY)")
            con.executemany("INSERT INTO ks VALUES (?)", [(k,) for k in range(1, scale)])
            # A range still open at exit would, replicated, span all later replicas: close it at
            # the end of its own replica, except in the last one.
            if "NVTX_EVENTS" in tables:
                con.execute(f"UPDATE main.NVTX_EVENTS SET end = {t1} WHERE end IS NULL AND eventType IN ({ranges})")
            for table in tables:
                cols = ", ".join(f'"{c}"' for c in _columns(con, table, "src"))
                select = _replica_select(con, table, shift, corr, rng)
                where = ""
                if table == "NVTX_EVENTS":
                    where = f"WHERE eventType NOT IN ({','.join(map(str, NVTX_METADATA_TYPES))})"
                    open_end = (
                        f'CASE WHEN "end" IS NULL AND eventType IN ({ranges}) AND ks.k < {scale - 1}'
                        f' THEN {t1} + ks.k * {shift} ELSE "end" + ks.k * {shift} END'
                    )
                    select = select.replace(f'"end" + ks.k * {shift}', open_end)
                con.execute(
                    f'INSERT INTO main."{table}" ({cols}) SELECT {select} FROM ks CROSS JOIN src."{table}" {where}'
                )
            extra = (scale - 1) * shift
            if "ANALYSIS_DETAILS" in _tables(con):
                con.execute(
                    f"UPDATE main.ANALYSIS_DETAILS SET duration = duration + {extra}, stopTime = stopTime + {extra}"
                )
        con.execute("COMMIT")
        con.execute("DETACH DATABASE src")
    finally:
        con.close()
    tmp.replace(dst)


def _nvtx_names(con: sqlite3.Connection) -> pl.LazyFrame:
    rows = con.execute(
        "SELECT e.start, e.end, e.globalTid, coalesce(e.text, s.value) FROM NVTX_EVENTS e"
        " LEFT JOIN StringIds s ON s.id = e.textId WHERE e.eventType IN (59, 60) AND e.end IS NOT NULL"
    ).fetchall()
    schema = {"start": pl.Int64, "end": pl.Int64, "globalTid": pl.Int64, "name": pl.Utf8}
    return pl.LazyFrame(rows, schema=schema, orient="row")


def op_range_rows(
    con: sqlite3.Connection, per_kernel: int, op_id: bool = True, step_name: str = "decode_step"
) -> pl.DataFrame:
    """NVTX rows (start, end, globalTid, text) of `per_kernel` nested operator ranges per GPU-op launch in a step."""
    tables = _tables(con)
    corr_ids = pl.concat(
        [
            pl.LazyFrame(
                con.execute(f"SELECT DISTINCT correlationId FROM {t}").fetchall(),
                schema={"corr": pl.Int64},
                orient="row",
            )
            for t in _GPU_OP_TABLES
            if t in tables
        ]
    ).unique()
    launches = pl.LazyFrame(
        con.execute("SELECT start, end, globalTid, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME").fetchall(),
        schema={"start": pl.Int64, "end": pl.Int64, "globalTid": pl.Int64, "corr": pl.Int64},
        orient="row",
    ).join(corr_ids, on="corr", how="semi")
    steps = (
        _nvtx_names(con)
        .filter(pl.col("name") == step_name)
        .select(pl.col("start").alias("step_start"), pl.col("end").alias("step_end"), "globalTid")
    )
    r = per_kernel
    inside = (
        launches.sort("start")
        .join_asof(
            steps.sort("step_start"),
            left_on="start",
            right_on="step_start",
            by="globalTid",
            strategy="backward",
            check_sortedness=False,
        )
        .filter((pl.col("start") - r >= pl.col("step_start")) & (pl.col("end") + r <= pl.col("step_end")))
        .sort("globalTid", "start")
        # keep the nested ranges of neighbouring launches disjoint
        .filter(pl.col("start") - r > pl.col("end").shift(1).over("globalTid").fill_null(-(1 << 62)) + r)
        .with_row_index("launch")
    )
    levels = pl.LazyFrame({"level": list(range(r))}, schema={"level": pl.Int64})
    names = pl.Series(OP_NAMES)
    out = (
        inside.join(levels, how="cross")  # a cross join with the R levels only, not an interval join
        .with_columns(
            (pl.col("start") - (r - pl.col("level"))).alias("start"),
            (pl.col("end") + (r - pl.col("level"))).alias("end"),
            pl.col("level").mod(len(OP_NAMES)).alias("op"),
            (pl.col("launch").cast(pl.Int64) * r + pl.col("level") + 1_000_000).alias("op_id"),
        )
        .with_columns(pl.col("op").replace_strict(list(range(len(OP_NAMES))), names.to_list()).alias("op"))
        .with_columns(
            pl.concat_str(
                pl.lit("aten::"),
                pl.col("op"),
                pl.lit(", seq = "),
                pl.col("launch").cast(pl.Utf8),
                *((pl.lit(", op_id = "), pl.col("op_id").cast(pl.Utf8)) if op_id else ()),
                pl.lit(", sizes = [[1, 1280], [1280, 1280]], input_op_ids = [(0,-1), (0,-1)]") if op_id else pl.lit(""),
            ).alias("text")
        )
    )
    if not op_id:
        out = out.with_columns(pl.concat_str(pl.lit("aten::"), pl.col("op")).alias("text"))
    return out.select("start", "end", "globalTid", "text").sort("start", "end").collect()


def add_op_ranges(path: Path, per_kernel: int, op_id: bool = True) -> int:
    """Insert operator ranges into the export at `path` (in place); returns how many."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        rows = op_range_rows(con, per_kernel, op_id)
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) VALUES (?, ?, 59, ?, ?, 0)",
            rows.select("start", "end", "text", "globalTid").iter_rows(),
        )
        con.execute("COMMIT")
    finally:
        con.close()
    return rows.height


def materialize_source(src: Path, workdir: Path) -> Path:
    """An uncompressed copy of `src` if it is .xz, else `src` itself."""
    if src.suffix != ".xz":
        return src
    out = workdir / src.stem
    with lzma.open(src) as fin, out.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return out


def build(src: Path, dst: Path, scale: int, op_ranges: int = 0, op_id: bool = True) -> dict[str, int]:
    """Build the synthetic export; returns row counts of the main tables."""
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmpdir:
        base = materialize_source(src, Path(tmpdir))
        if op_ranges > 0:
            with_ops = Path(tmpdir) / "with_ops.sqlite"
            shutil.copyfile(base, with_ops)
            add_op_ranges(with_ops, op_ranges, op_id)
            base = with_ops
        replicate(base, dst, scale)
    return counts(dst)


def counts(path: Path) -> dict[str, int]:
    """Row counts of the tables the analyzers read."""
    con = sqlite3.connect(path)
    try:
        tables = set(_tables(con))
        out: dict[str, int] = {
            t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_MEMCPY")
            if t in tables
        }
        if "NVTX_EVENTS" in tables:
            out["NVTX ranges"] = con.execute("SELECT count(*) FROM NVTX_EVENTS WHERE eventType IN (59, 60)").fetchone()[
                0
            ]
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src", type=Path, help="a real nsys SQLite export (.sqlite or .sqlite.xz)")
    parser.add_argument("out", type=Path, help="the synthetic export to write")
    parser.add_argument("--scale", type=int, default=30, help="number of replicas in time (default 30: ~2.1M kernels)")
    parser.add_argument("--op-ranges", type=int, default=0, help="nested aten:: ranges per decode-step GPU launch")
    parser.add_argument("--no-op-id", action="store_true", help="operator range names without the unique op_id")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        print(f"make_synthetic_trace: {args.src}: no such file; pass an nsys SQLite export", file=sys.stderr)
        return 2
    if args.scale < 1 or args.op_ranges < 0:
        print("make_synthetic_trace: --scale must be >= 1 and --op-ranges >= 0", file=sys.stderr)
        return 2
    t = time.perf_counter()
    n = build(args.src, args.out, args.scale, args.op_ranges, not args.no_op_id)
    size = args.out.stat().st_size / 1e6
    summary = ", ".join(f"{k}={v:,}" for k, v in n.items())
    print(f"{args.out}: {size:.0f} MB, {summary} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
