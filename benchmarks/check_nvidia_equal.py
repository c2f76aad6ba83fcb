"""Check dsocr's NVTX projection and kernel summary against NVIDIA's scripts on one export.

    python benchmarks/check_nvidia_equal.py TRACE.sqlite

Runs scripts/nvidia-oracle.sh (NVIDIA's nvtx_gpu_proj_sum and cuda_gpu_kern_sum from
$DSOCR_NSYS_HOME) and dsocr's projection_summary / kernel_summary on the same file, and prints
the rows and the mismatching cells per column (exit 1 on any mismatch). For a multi-GPU trace of
`dsocr capture --gpus N` as for a one-GPU one.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import polars as pl

from dsocr.analyze.kernels import KERNEL_COLUMNS, kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.op_details import with_op_details
from dsocr.analyze.projection import SUMMARY_COLUMNS, projection_summary

ORACLE = Path(__file__).resolve().parents[1] / "scripts" / "nvidia-oracle.sh"


def _oracle(path: Path, report: str) -> pl.DataFrame:
    done = subprocess.run(["bash", str(ORACLE), str(path), report], capture_output=True, text=True, check=True)
    return pl.read_csv(io.StringIO(done.stdout), infer_schema_length=None)


def _bad(oracle: pl.DataFrame, mine: pl.DataFrame, keys: list[str], cols: list[str]) -> dict[str, int]:
    j = oracle.join(mine, on=keys, how="full", suffix="_me", coalesce=True)
    return {
        c: j.filter((pl.col(c) != pl.col(f"{c}_me")) | pl.col(c).is_null() | pl.col(f"{c}_me").is_null()).height
        for c in cols
    }


def main(argv: list[str] | None = None) -> int:
    path = Path((argv if argv is not None else sys.argv[1:])[0])
    trace = load_trace(path)
    proj_o = _oracle(path, "nvtx_gpu_proj_sum")
    proj_o.columns = list(SUMMARY_COLUMNS)
    proj = projection_summary(trace)
    kern_o = _oracle(path, "cuda_gpu_kern_sum")
    kern_o = kern_o.drop("_Q1", "_Q3") if "_Q1" in kern_o.columns else kern_o
    kern_o.columns = list(KERNEL_COLUMNS)
    kern = kernel_summary(trace)
    bad_p = _bad(proj_o, proj, ["range", "style"], list(SUMMARY_COLUMNS[2:]))
    bad_k = _bad(kern_o, kern, ["name"], [c for c in KERNEL_COLUMNS if c != "name"])
    ops = with_op_details(trace, trace.gpu_ops, ["device_id"])
    devices = ops.select(pl.col("device_id").n_unique()).collect().item()
    print(f"{path}: {devices} device(s)")
    print(f"nvtx_gpu_proj_sum: {proj_o.height} rows (dsocr {proj.height}); mismatching cells: {sum(bad_p.values())}")
    print(f"cuda_gpu_kern_sum: {kern_o.height} rows (dsocr {kern.height}); mismatching cells: {sum(bad_k.values())}")
    ok = (
        proj.height == proj_o.height
        and kern.height == kern_o.height
        and not any(bad_p.values())
        and not any(bad_k.values())
    )
    print("NVIDIA-equal" if ok else f"DIFFERENT: {bad_p} {bad_k}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
