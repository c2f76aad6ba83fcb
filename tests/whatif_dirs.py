"""Hand-built run directories and what-if directories for the what-if tests (known per-pass times)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsocr.contract.whatif_index import COMPLETE, Entry, Sweep, Variant, WhatIfIndex

H100 = "NVIDIA H100 80GB HBM3"


def make_run(
    run_dir: Path,
    *,
    decode: Sequence[float],
    vision: Sequence[float] | None = None,
    prefill: Sequence[float] | None = None,
    extra: float = 50.0,
    pages: int = 2,
    execution: Mapping[str, str] | None = None,
    gpu: str | None = H100,
    tokens: int = 16,
    peak: int = 8 * 2**30,
    clock: str = "cuda-event",
    mode: str = "gundam",
) -> Path:
    """A run directory with one unprofiled timing file: per pass, ``decode[k]`` ms of decode (split evenly
    over the pages), vision and prefill likewise (default 100 and 200 ms), and ``extra`` ms outside them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    vision = vision or [100.0] * len(decode)
    prefill = prefill or [200.0] * len(decode)
    records: list[dict[str, Any]] = []
    for r, (d, v, p) in enumerate(zip(decode, vision, prefill, strict=True)):
        records.append({"repeat": r, "page": None, "stage": "repeat", "ms": d + v + p + extra, "tokens": None})
        for page in range(pages):
            records += [
                {"repeat": r, "page": page, "stage": "page", "ms": (d + v + p) / pages, "tokens": tokens},
                {
                    "repeat": r,
                    "page": page,
                    "stage": "vision",
                    "ms": v / pages,
                    "tokens": 903,
                    "peak_allocated_bytes": peak - 2**20,
                },
                {
                    "repeat": r,
                    "page": page,
                    "stage": "prefill",
                    "ms": p / pages,
                    "tokens": 915,
                    "peak_allocated_bytes": peak,
                },
                {
                    "repeat": r,
                    "page": page,
                    "stage": "decode",
                    "ms": d / pages,
                    "tokens": tokens - 1,
                    "peak_allocated_bytes": peak - 2**21,
                },
            ]
    timing = {
        "schema": "dsocr.timing",
        "version": "1.0",
        "clock": clock,
        "profiled": False,
        "capture_range": "none",
        "interrupted": False,
        "config": {
            "device": "cuda" if gpu else "cpu",
            "dtype": "auto",
            "mode": mode,
            "repeats": len(decode),
            "max_new_tokens": tokens,
            "prompt_tokens": 12,
        },
        "environment": {"device_name": gpu},
        "model": {
            "execution": {
                "moe": "loop",
                "attn": "eager",
                "autocast": "bfloat16",
                "prefill_logits": "all",
                # as the worker writes it: batch is a number (the variants name it as text)
                **{k: int(v) if k == "batch" else v for k, v in (execution or {}).items()},
            }
        },
        "pages": [{"index": i, "grid": [2, 3], "crops": 6} for i in range(pages)],
        "records": records,
    }
    (run_dir / "timing-baseline.json").write_text(json.dumps(timing))
    (run_dir / "manifest.json").write_text(json.dumps({"kind": "dsocr-capture", "gpu": gpu, "status": "complete"}))
    return run_dir


def make_analysis(run_dir: Path, passes: int, rows: Mapping[str, Mapping[str, float]]) -> None:
    """A minimal analysis.json beside the timing: per stage, GPU busy ns (all passes) and per-step counts."""
    stages = [{"stage": name, **values} for name, values in rows.items()]
    (run_dir / "analysis.json").write_text(json.dumps({"repeats": {"passes": passes}, "stages": stages}))


def make_whatif(root: Path, variants: Sequence[tuple[Variant, str]], sweep: Sweep | None = None) -> WhatIfIndex:
    """``root/whatif.json`` naming ``baseline`` and ``variants`` (variant, status); run dirs made by the caller."""
    entries = [Entry(Variant("baseline"), "baseline", COMPLETE)]
    entries += [
        Entry(v, v.name, status, None if status == COMPLETE else "CUDA out of memory") for v, status in variants
    ]
    index = WhatIfIndex("2026-12-07T00:00:00+00:00", ("dsocr", "whatif", "run"), tuple(entries), sweep)
    index.write(root)
    return index
