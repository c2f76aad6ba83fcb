"""Layer 3: the analytic model: FLOPs and bytes per module and stage, peaks, MFU/MBU. Pure Python."""
