"""Layer 4: trace loading, NVTX-to-GPU projection, stage/kernel/operator tables, repeats. polars only."""
