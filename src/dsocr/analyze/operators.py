"""Operator attribution from PyTorch's ``emit_nvtx`` ranges.

``torch.autograd.profiler.emit_nvtx(record_shapes=True)`` pushes one range per operator,
e.g. ``aten::addmm, seq = 1, op_id = 5, sizes = [[16], [2, 8]], input_op_ids = [(4,0)]``.
``op_id`` grows without end and ``seq``/``input_op_ids`` identify one call, so all three are
stripped before grouping; the shapes go to their own column. Each GPU op is attributed to
its innermost operator range.
"""

from __future__ import annotations

import polars as pl

#: A range is an operator range when its message looks like ``aten::...`` or carries an op_id.
OP_RANGE_PATTERN = r"^aten::|, op_id = \d+"


def is_op_range(message: pl.Expr) -> pl.Expr:
    """Whether a range message is an ``emit_nvtx`` operator range."""
    return message.fill_null("").str.contains(OP_RANGE_PATTERN)


def parse_op_message(message: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Return (operator name, input shapes) expressions for ``emit_nvtx`` messages.

    The name is the text before the first ``, ``; the shapes are the ``sizes = [...]`` value
    (null when the range has no shapes). ``seq``, ``op_id`` and ``input_op_ids`` are dropped.
    """
    op = message.str.splitn(", ", 2).struct.field("field_0")
    # the shapes are ``sizes = (\[.*\])$`` after cutting ``, input_op_ids = .*$``; a message
    # without a line break takes literal splits instead (the same text, without the regex cost)
    multiline = message.str.contains("\n", literal=True)
    by_regex = (
        pl.when(multiline).then(message).str.replace(r", input_op_ids = .*$", "").str.extract(r"sizes = (\[.*\])$", 1)
    )
    cut = message.str.splitn(", input_op_ids = ", 2).struct.field("field_0")
    literal = pl.when(cut.str.ends_with("]")).then(pl.lit("[") + cut.str.splitn("sizes = [", 2).struct.field("field_1"))
    shapes = pl.when(multiline).then(by_regex).otherwise(literal)
    return op.alias("operator"), shapes.alias("input_shapes")


def op_range_names(ranges: pl.LazyFrame, op_range_ids: pl.LazyFrame) -> pl.LazyFrame:
    """``op_range_id``, ``operator``, ``input_shapes`` of the distinct ranges in ``op_range_ids``."""
    op, shapes = parse_op_message(pl.col("message"))
    wanted = op_range_ids.select(pl.col("op_range_id").alias("range_id")).unique()
    return ranges.join(wanted, on="range_id", how="semi").select(pl.col("range_id").alias("op_range_id"), op, shapes)


def innermost_op_range(op_ranges: pl.LazyFrame, ranges: pl.LazyFrame) -> pl.LazyFrame:
    """For each GPU op inside an operator range: its innermost one (``op_id``, ``op_range_id``).

    ``op_ranges`` is the attribution long frame (``op_id``, ``range_id``: every enclosing range).
    """
    ops = ranges.filter(is_op_range(pl.col("message"))).select("range_id", "depth")
    return (
        op_ranges.select("op_id", "range_id")
        .join(ops, on="range_id", how="inner")
        .sort("op_id", "depth")
        .group_by("op_id")
        .agg(pl.col("range_id").last().alias("op_range_id"))
    )


def innermost_op_range_via_parents(op_innermost: pl.LazyFrame, ranges: pl.LazyFrame) -> pl.LazyFrame:
    """The same as :func:`innermost_op_range`, from each op's innermost range of any kind.

    ``op_innermost`` (``op_id``, ``range_id``) names the deepest enclosing range; when that is
    not an operator range (a library range such as CCCL's inside ``aten::sort``) the parent
    chain is walked up to the nearest operator range. The walk runs once per distinct
    innermost range, not per op.
    """
    inner = op_innermost.select("op_id", "range_id").collect()
    info = ranges.select("range_id", "parent_id", is_op_range(pl.col("message")).alias("_is_op")).collect()
    probe = info.select(pl.col("range_id").alias("_probe"), "parent_id", "_is_op")
    cur = inner.select(pl.col("range_id").unique()).with_columns(pl.col("range_id").alias("_probe"))
    found: list[pl.DataFrame] = []
    while cur.height:
        step = cur.join(probe, on="_probe", how="inner")
        found.append(step.filter(pl.col("_is_op")).select("range_id", pl.col("_probe").alias("op_range_id")))
        cur = step.filter(~pl.col("_is_op") & pl.col("parent_id").is_not_null()).select(
            "range_id", pl.col("parent_id").alias("_probe")
        )
    nearest = pl.concat(found) if found else pl.DataFrame(schema={"range_id": pl.UInt32, "op_range_id": pl.UInt32})
    return inner.lazy().join(nearest.lazy(), on="range_id", how="inner").select("op_id", "op_range_id")
