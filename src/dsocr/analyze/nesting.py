"""Vision inside prefill: how a trace places its ``vision`` ranges, and prefill's exclusive metrics.

dsocr's own capture emits ``vision`` beside ``prefill`` (both inside ``page``). The checkpoint's
own code (``trust_remote_code``) runs the vision encoders inside the first forward of
``generate``, so a capture of it has ``page > prefill > vision``: every op and API call of vision
then also counts for prefill (attribution is by enclosing range), and prefill's metrics are
inclusive. For such a trace each prefill instance also gets exclusive columns (``<metric>_excl``,
:data:`EXCL_METRICS`): the prefill's value minus the sum over the vision instances inside it.

Each of those metrics adds up over the vision instances inside a prefill: counts and kernel
time exactly; GPU busy time because vision's ops are a subset of prefill's, so
``busy(prefill) - busy(vision)`` is the time the GPU ran prefill's own work while no vision work
ran; range time because vision's range lies inside prefill's. Inclusive = vision + exclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
import polars as pl

from dsocr.contract import nvtx_names as nv

#: Vision ranges beside prefill (dsocr's own NVTX contract).
BESIDE: Final = "beside"
#: Every vision range inside a prefill range (the checkpoint's own code).
NESTED: Final = "nested"
#: Some vision ranges inside a prefill range and some not, or vision overlapping prefill without
#: being inside it: warned about.
MIXED: Final = "mixed"

#: The stage that may hold the other (``HOST``) and the one it may hold (``GUEST``).
HOST: Final = nv.PREFILL
GUEST: Final = nv.VISION

#: Instance metrics that get an exclusive column in a trace with vision inside prefill. The other
#: counts and bytes add up the same way (exclusive = prefill - vision); ``gpu_span_ns`` (first op
#: start to last op end) does not subtract and has none.
EXCL_METRICS: Final[tuple[str, ...]] = (
    "cpu_ns",
    "gpu_busy_ns",
    "kernel_ns",
    "kernels",
    "launches",
    "syncs",
    "d2h_copies",
)
EXCL_SUFFIX: Final = "_excl"
#: The exclusive idle fraction (``1 - gpu_busy_ns_excl / cpu_ns_excl``).
IDLE_EXCL: Final = "gpu_idle_frac_excl"

#: What a report says of a trace with vision inside prefill.
NOTE: Final = (
    "vision ran inside prefill (the checkpoint's own code): prefill times are inclusive; "
    "exclusive prefill = prefill - vision"
)


def excl(metric: str) -> str:
    """The exclusive column of ``metric`` (``cpu_ns`` -> ``cpu_ns_excl``)."""
    return metric + EXCL_SUFFIX


#: Every exclusive column, in the order they are appended to the instance and stage tables.
EXCL_COLUMNS: Final[tuple[str, ...]] = (*(excl(m) for m in EXCL_METRICS), IDLE_EXCL)


@attrs.frozen
class Nesting:
    """Where the vision ranges of one trace sit relative to its prefill ranges."""

    shape: str  #: :data:`BESIDE`, :data:`NESTED` or :data:`MIXED`
    vision: int  #: vision instances
    inside: int  #: of them inside a prefill instance (same thread)
    overlapping: int  #: of them overlapping a prefill instance without being inside it

    @property
    def exclusive(self) -> bool:
        """Whether prefill instances got exclusive columns (some vision ran inside prefill)."""
        return self.inside > 0

    def warning(self, file: str) -> str | None:
        """One line for a mixed or odd shape (``None`` for beside and nested)."""
        if self.shape != MIXED:
            return None
        odd = f", {self.overlapping} overlap a prefill range without being inside it" if self.overlapping else ""
        return (
            f"{file}: {self.inside} of {self.vision} vision ranges lie inside a prefill range{odd}: "
            "prefill's exclusive columns subtract only the vision ranges inside it; "
            "check the capture's NVTX ranges (vision beside prefill, or every vision inside one)"
        )

    def to_dict(self, file: str) -> dict[str, object]:
        """The trace's entry in analysis.json's ``stage_nesting.files``."""
        return {
            "file": file,
            "shape": self.shape,
            "vision": self.vision,
            "inside": self.inside,
            "overlapping": self.overlapping,
        }


def _placement(instances: pl.DataFrame) -> pl.DataFrame:
    """Per vision instance: ``range_id``, ``_host`` (the prefill instance holding it, else null) and
    ``_overlap`` (it overlaps a prefill instance without being inside it)."""
    guests = (
        instances.lazy().filter(pl.col("stage") == GUEST).select("range_id", "start", "end", "global_tid").sort("start")
    )
    hosts = (
        instances.lazy()
        .filter(pl.col("stage") == HOST)
        .select("global_tid", pl.col("range_id").alias("_h"), pl.col("start").alias("_hs"), pl.col("end").alias("_he"))
        .sort("_hs")
    )
    after = hosts.select("global_tid", pl.col("_hs").alias("_ns"))
    # the last prefill starting at or before the vision range holds it if it ends at or after it;
    # any prefill starting inside the vision range, or ending inside it, overlaps it
    placed = guests.join_asof(
        hosts, left_on="start", right_on="_hs", by="global_tid", strategy="backward", check_sortedness=False
    ).join_asof(after, left_on="start", right_on="_ns", by="global_tid", strategy="forward", check_sortedness=False)
    inside = pl.col("_he") >= pl.col("end")
    overlap = ((pl.col("_he") > pl.col("start")) & ~inside) | (
        (pl.col("_ns") > pl.col("start")) & (pl.col("_ns") < pl.col("end"))
    )
    return placed.select(
        "range_id",
        pl.when(inside).then(pl.col("_h")).alias("_host"),
        (overlap.fill_null(False) & ~inside.fill_null(False)).alias("_overlap"),
    ).collect()


def with_exclusive(
    instances: pl.DataFrame, idle: Callable[[pl.Expr, pl.Expr], pl.Expr] | None
) -> tuple[pl.DataFrame, Nesting | None]:
    """The instance table, with the exclusive columns where vision ran inside prefill, and the trace's nesting.

    ``idle(busy, range_time)`` gives the idle fraction (``None``: no GPU traced, the exclusive
    idle fraction is null). The nesting is ``None`` when the trace has no vision or no prefill
    range; the columns are added only when some vision instance lies inside a prefill instance.
    """
    names = set(instances.get_column("stage").unique().to_list()) if instances.height else set()
    if GUEST not in names or HOST not in names:
        return instances, None
    placed = _placement(instances)
    n, inside = placed.height, int(placed["_host"].is_not_null().sum())
    overlapping = int(placed["_overlap"].sum())
    shape = NESTED if inside == n else BESIDE if inside == 0 and overlapping == 0 else MIXED
    nesting = Nesting(shape, n, inside, overlapping)
    if not nesting.exclusive:
        return instances, nesting
    held = (
        instances.lazy()
        .join(placed.lazy().filter(pl.col("_host").is_not_null()), on="range_id", how="inner")
        .group_by("_host")
        .agg(pl.col(m).sum().alias(f"_g_{m}") for m in EXCL_METRICS)
    )
    host = pl.col("stage") == HOST
    out = (
        instances.lazy()
        .join(held, left_on="range_id", right_on="_host", how="left", maintain_order="left")
        .with_columns(
            pl.when(host).then(pl.col(m) - pl.col(f"_g_{m}").fill_null(0)).alias(excl(m)) for m in EXCL_METRICS
        )
        .with_columns(
            pl.when(host).then(idle(pl.col(excl("gpu_busy_ns")), pl.col(excl("cpu_ns")))).alias(IDLE_EXCL)
            if idle is not None
            else pl.lit(None, dtype=pl.Float64).alias(IDLE_EXCL)
        )
        .drop(f"_g_{m}" for m in EXCL_METRICS)
        .collect()
    )
    return out, nesting


def summary_columns(instances: pl.DataFrame) -> list[pl.Expr]:
    """Aggregations of the exclusive columns per stage (null for stages without them); none when absent."""
    if excl("cpu_ns") not in instances.columns:
        return []
    return [
        pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in (excl(m) for m in EXCL_METRICS)
    ]
