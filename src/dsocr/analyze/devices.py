"""Per-device tables of a data-parallel trace (``dsocr capture --gpus N``: N worker processes).

A worker is one process with stage ranges in a trace (its ranges' ``global_tid`` carry the process);
its device is the ``deviceId`` of most of the GPU operations it launched (none in a CPU-only trace).
These tables exist only when some trace holds more than one worker: a one-GPU trace's outputs do
not change.

- ``workers``: per trace and worker: process, device and GPU, page instances (pages x repeats it
  ran), the span from its first to its last outermost stage range, the summed range time, GPU busy time
  (the union of its GPU work inside those ranges) and idle fraction, pages per second.
- ``stages``: per trace, worker and stage (``page`` and the top stages): instances, summed range time
  and GPU busy time, mean range time, idle fraction.
- ``balance``: per trace and stage: the slowest and the fastest worker by summed range time, both
  times and their ratio (1.0 = even), and the same for the mean per instance (uneven shards:
  round-robin leaves some workers one page more).
- ``throughput``: per trace: workers, page instances, the span from the first worker's start to the
  last worker's end, pages per second of the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.op_details import with_op_details
from dsocr.analyze.trace import Trace
from dsocr.contract import nvtx_names as nv

#: The stages tabulated per device.
DEVICE_STAGES: Final[tuple[str, ...]] = (nv.PAGE, *nv.TOP_STAGES)


@attrs.frozen
class DeviceTables:
    """The per-device frames (module docstring)."""

    workers: pl.DataFrame
    stages: pl.DataFrame
    balance: pl.DataFrame
    throughput: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """The ``devices`` entry of analysis.json (NaN as None)."""
        return {name: _rows(getattr(self, name)) for name in ("workers", "stages", "balance", "throughput")}


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    floats = [c for c, t in df.schema.items() if t.is_float()]
    return df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats).to_dicts()


def processes(trace: Trace) -> pl.DataFrame:
    """Each process's device: ``global_pid``, ``device_id`` (of most of its GPU operations), ``gpu_ops``."""
    ops = with_op_details(trace, trace.gpu_ops.select("op_id"), ["global_pid", "device_id"])
    return (
        ops.filter(pl.col("global_pid").is_not_null())
        .group_by("global_pid", "device_id")
        .agg(pl.len().cast(pl.Int64).alias("gpu_ops"))
        .sort("global_pid", "gpu_ops", "device_id", descending=[False, True, False])
        .group_by("global_pid", maintain_order=True)
        .first()
        .select(pl.col("global_pid").cast(pl.Int64), pl.col("device_id").cast(pl.Int64), "gpu_ops")
        .collect()
    )


def _idle(busy: pl.Expr, cpu: pl.Expr) -> pl.Expr:
    return pl.when(busy.is_not_null() & (cpu > 0)).then((1.0 - busy / cpu).clip(0.0, 1.0)).otherwise(None)


def device_tables(
    instances: pl.DataFrame, procs: Sequence[pl.DataFrame | None], gpus: Sequence[Sequence[dict[str, Any]]]
) -> DeviceTables | None:
    """The per-device tables of the combined stage instances (``file`` = trace index), or None with one worker."""
    if instances.is_empty():
        return None
    inst = instances.lazy().with_columns(
        (pl.col("global_tid") // (1 << S.TID_BITS) * (1 << S.TID_BITS)).alias("global_pid")
    )
    counts = inst.group_by("file").agg(pl.col("global_pid").n_unique().alias("n")).collect()
    if counts.is_empty() or int(counts["n"].max() or 0) <= 1:  # type: ignore[arg-type]
        return None
    proc_frames = [
        p.with_columns(pl.lit(i, dtype=pl.Int64).alias("file")) for i, p in enumerate(procs) if p is not None
    ]
    schema = {"global_pid": pl.Int64, "device_id": pl.Int64, "gpu_ops": pl.Int64, "file": pl.Int64}
    proc = pl.concat(proc_frames, how="vertical_relaxed") if proc_frames else pl.DataFrame(schema=schema)
    names = pl.DataFrame(
        [(i, int(g["device_id"]), str(g.get("name"))) for i, gs in enumerate(gpus) for g in gs],
        schema={"file": pl.Int64, "device_id": pl.Int64, "gpu": pl.Utf8},
        orient="row",
    )
    workers_of = (
        inst.select("file", "global_pid")
        .unique()
        .with_columns(pl.col("global_pid").rank("dense").over("file").sub(1).cast(pl.Int64).alias("worker"))
        .join(proc.lazy().select("file", "global_pid", "device_id"), on=["file", "global_pid"], how="left")
        .join(names.lazy(), on=["file", "device_id"], how="left")
    )
    gpu = pl.col("device_id").is_not_null()
    # each worker's outermost stage ranges (repeat; on the CPU they sit inside the capture range)
    top = inst.filter(pl.col("depth") == pl.col("depth").min().over("file", "global_pid"))
    workers = (
        top.group_by("file", "global_pid")
        .agg(
            pl.col("start").min().alias("first_start"),
            pl.col("end").max().alias("last_end"),
            pl.len().cast(pl.Int64).alias("top_instances"),
            pl.col("cpu_ns").sum().alias("range_ns"),
            pl.col("gpu_busy_ns").sum().alias("gpu_busy_ns"),
        )
        .join(
            inst.filter(pl.col("stage") == nv.PAGE)
            .group_by("file", "global_pid")
            .agg(pl.len().cast(pl.Int64).alias("page_instances")),
            on=["file", "global_pid"],
            how="left",
        )
        .join(workers_of, on=["file", "global_pid"], how="left")
        .with_columns(
            (pl.col("last_end") - pl.col("first_start")).alias("span_ns"),
            pl.col("page_instances").fill_null(0),
            pl.when(gpu).then(pl.col("gpu_busy_ns")).alias("gpu_busy_ns"),
        )
        .with_columns(
            _idle(pl.col("gpu_busy_ns"), pl.col("range_ns")).alias("gpu_idle_frac"),
            pl.when((pl.col("span_ns") > 0) & (pl.col("page_instances") > 0))
            .then(pl.col("page_instances") * 1e9 / pl.col("span_ns"))
            .alias("pages_per_s"),
            (pl.col("global_pid") // (1 << S.TID_BITS) % (1 << S.TID_BITS)).alias("pid"),
        )
        .select(
            "file",
            "worker",
            "pid",
            "device_id",
            "gpu",
            "page_instances",
            "top_instances",
            "first_start",
            "last_end",
            "span_ns",
            "range_ns",
            "gpu_busy_ns",
            "gpu_idle_frac",
            "pages_per_s",
        )
        .sort("file", "worker")
        .collect()
    )
    order = {s: i for i, s in enumerate(DEVICE_STAGES)}
    stages = (
        inst.filter(pl.col("stage").is_in(list(DEVICE_STAGES)))
        .join(workers_of.select("file", "global_pid", "worker", "device_id"), on=["file", "global_pid"], how="left")
        .group_by("file", "worker", "device_id", "stage")
        .agg(
            pl.len().cast(pl.Int64).alias("instances"),
            pl.col("cpu_ns").sum(),
            pl.col("gpu_busy_ns").sum(),
            pl.col("cpu_ns").mean().alias("cpu_ns_mean"),
        )
        .with_columns(pl.when(gpu).then(pl.col("gpu_busy_ns")).alias("gpu_busy_ns"))
        .with_columns(
            _idle(pl.col("gpu_busy_ns"), pl.col("cpu_ns")).alias("gpu_idle_frac"),
            pl.col("stage").replace_strict(order, return_dtype=pl.Int64).alias("_order"),
        )
        .sort("file", "_order", "worker")
        .drop("_order")
        .collect()
    )
    by_time = pl.col("cpu_ns")
    balance = (
        stages.lazy()
        .group_by("file", "stage", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("workers"),
            pl.col("worker").sort_by(by_time, descending=True).first().alias("slowest_worker"),
            pl.col("worker").sort_by(by_time).first().alias("fastest_worker"),
            by_time.max().alias("slowest_ns"),
            by_time.min().alias("fastest_ns"),
            pl.col("cpu_ns_mean").max().alias("slowest_mean_ns"),
            pl.col("cpu_ns_mean").min().alias("fastest_mean_ns"),
        )
        .with_columns(
            pl.when(pl.col("fastest_ns") > 0).then(pl.col("slowest_ns") / pl.col("fastest_ns")).alias("ratio"),
            pl.when(pl.col("fastest_mean_ns") > 0)
            .then(pl.col("slowest_mean_ns") / pl.col("fastest_mean_ns"))
            .alias("mean_ratio"),
        )
        .collect()
    )
    throughput = (
        workers.lazy()
        .group_by("file", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("workers"),
            pl.col("device_id").drop_nulls().n_unique().cast(pl.Int64).alias("devices"),
            pl.col("page_instances").sum(),
            pl.col("first_start").min(),
            pl.col("last_end").max(),
        )
        .with_columns((pl.col("last_end") - pl.col("first_start")).alias("span_ns"))
        .with_columns(
            pl.when((pl.col("span_ns") > 0) & (pl.col("page_instances") > 0))
            .then(pl.col("page_instances") * 1e9 / pl.col("span_ns"))
            .alias("pages_per_s")
        )
        .collect()
    )
    return DeviceTables(workers=workers, stages=stages, balance=balance, throughput=throughput)
