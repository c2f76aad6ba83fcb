"""Golden tests: dsocr's NVTX projection and kernel summary equal NVIDIA's reports on the H100 fixture."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import read_oracle
from dsocr.analyze.kernels import KERNEL_COLUMNS, kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.projection import SUMMARY_COLUMNS, projection_summary
from dsocr.analyze.trace import Trace


@pytest.fixture(scope="module")
def h100(h100_sqlite: Path) -> Trace:
    return load_trace(h100_sqlite)


def _mismatches(oracle: pl.DataFrame, mine: pl.DataFrame, keys: list[str], columns: list[str]) -> dict[str, int]:
    joined = oracle.join(mine, on=keys, how="full", suffix="_me", coalesce=True)
    return {
        c: joined.filter((pl.col(c) != pl.col(f"{c}_me")) | pl.col(c).is_null() | pl.col(f"{c}_me").is_null()).height
        for c in columns
    }


def test_projection_summary_equals_nvtx_gpu_proj_sum_on_every_range(h100: Trace) -> None:
    oracle = read_oracle("nvtx_gpu_proj_sum")
    oracle.columns = list(SUMMARY_COLUMNS)
    mine = projection_summary(h100)
    assert mine.height == oracle.height == 12879
    bad = _mismatches(oracle, mine, ["range", "style"], list(SUMMARY_COLUMNS[2:]))
    assert bad == dict.fromkeys(SUMMARY_COLUMNS[2:], 0)
    # NVIDIA orders by total projected time; the order of exact ties is unspecified.
    assert mine["total_proj_ns"].to_list() == oracle["total_proj_ns"].to_list()
    top = mine.head(3).select("range", "instances", "total_proj_ns", "gpu_ops").rows()
    assert top == [
        ("decode", 3, 5240713867, 72732),
        ("decode_step", 76, 5238070412, 72732),
        ("prefill", 3, 781501074, 3431),
    ]


def test_kernel_summary_equals_cuda_gpu_kern_sum_on_every_kernel(h100: Trace) -> None:
    oracle = read_oracle("cuda_gpu_kern_sum").drop("_Q1", "_Q3")
    oracle.columns = list(KERNEL_COLUMNS)
    mine = kernel_summary(h100)
    assert mine.height == oracle.height == 66
    cols = [c for c in KERNEL_COLUMNS if c != "name"]
    assert _mismatches(oracle, mine, ["name"], cols) == dict.fromkeys(cols, 0)
    assert mine["name"].to_list() == oracle["name"].to_list()


def test_summary_paths_agree(h100: Trace) -> None:
    from dsocr.analyze.attribution import attribute
    from dsocr.analyze.projection import projection_trace

    lean = projection_summary(h100)
    pairs = attribute(h100).api_ranges
    keys = ["range", "style"]
    assert projection_summary(h100, pairs=pairs).sort(keys).equals(lean.sort(keys))
    assert projection_summary(h100, projection_trace(h100, pairs)).sort(keys).equals(lean.sort(keys))
