"""Offline SVG plots for the reports (hand-written SVG: no dependency, deterministic)."""

from dsocr.report.plots.charts import (
    category_breakdown,
    decode_latency,
    gpu_timeline,
    pass_spread,
    roofline,
    stage_breakdown,
)

__all__ = ["category_breakdown", "decode_latency", "gpu_timeline", "pass_spread", "roofline", "stage_breakdown"]
