"""Per-stage timing of the worker and the ``timing.json`` it writes (docs/timing-schema.md).

On CUDA every stage instance gets a pair of CUDA events on the current stream; they are read
only after the last stage (one synchronization after the capture range closed), so timing
adds no host-device synchronization to the trace. On the CPU the clock is
``time.perf_counter``. Peak allocated memory (``torch.cuda.max_memory_allocated``) is tracked
per stage instance: the peak counter is reset when a stage opens and folded into every
enclosing open stage, so nested stages each get their own peak.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.atomic import write_text

SCHEMA: Final = "dsocr.timing"
SCHEMA_VERSION: Final = "1.0"
CLOCK_CUDA: Final = "cuda-event"
CLOCK_CPU: Final = "perf-counter"

#: Columns of one record in ``records`` (docs/timing-schema.md).
RECORD_FIELDS: Final = (
    "repeat",
    "page",
    "stage",
    "index",
    "ms",
    "tokens",
    "prefill_length",
    "context_length",
    "peak_allocated_bytes",
    "batch",  # pages the forward held (``--batch``); absent (None) in the repeat record
)


@attrs.define
class _Open:
    record: dict[str, Any]
    start: Any  # CUDA event or perf_counter float
    order: int = 0
    peak: int = 0


@attrs.define
class StageTimer:
    """Times nested stage instances; :meth:`records` resolves them (after all work is queued)."""

    cuda: bool
    _torch: Any = None
    _done: list[tuple[int, dict[str, Any], Any, Any]] = attrs.field(factory=list)
    _started: int = 0
    _open: list[_Open] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        if self.cuda:
            import torch

            self._torch = torch

    @property
    def clock(self) -> str:
        """``cuda-event`` or ``perf-counter``."""
        return CLOCK_CUDA if self.cuda else CLOCK_CPU

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def _fold_peak(self) -> None:
        peak = int(self._torch.cuda.max_memory_allocated())
        for o in self._open:
            o.peak = max(o.peak, peak)
        self._torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def stage(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Time the block as one record (``stage``, ``repeat``, ``page``, ...; ``ms`` filled later)."""
        if self.cuda:
            self._fold_peak()
        entry = _Open(record=dict(record), start=self._mark(), order=self._started)
        self._started += 1
        self._open.append(entry)
        try:
            yield entry.record
        finally:
            end = self._mark()
            if self.cuda:
                self._fold_peak()
            self._open.remove(entry)
            entry.record["peak_allocated_bytes"] = entry.peak if self.cuda else None
            self._done.append((entry.order, entry.record, entry.start, end))

    def records(self) -> list[dict[str, Any]]:
        """Every finished record with ``ms``, in start order (synchronizes the device once on CUDA)."""
        if self.cuda and self._done:
            self._torch.cuda.synchronize()
        out = []
        for _, rec, start, end in sorted(self._done, key=lambda d: d[0]):
            ms = float(start.elapsed_time(end)) if self.cuda else (end - start) * 1e3
            full = {k: rec.get(k) for k in RECORD_FIELDS}
            full["ms"] = ms
            out.append(full)
        return out


def timing_document(
    *,
    clock: str,
    records: list[dict[str, Any]],
    config: dict[str, Any],
    model: dict[str, Any],
    prompt: dict[str, Any],
    pages: list[dict[str, Any]],
    environment: dict[str, Any],
    setup: dict[str, Any],
    assumptions: list[str],
    interrupted: bool = False,
) -> dict[str, Any]:
    """The ``timing.json`` object (docs/timing-schema.md)."""
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "clock": clock,
        "profiled": config.get("capture_range") != "none",
        "capture_range": config.get("capture_range"),
        "interrupted": interrupted,
        "config": config,
        "environment": environment,
        "model": model,
        "prompt": prompt,
        "pages": pages,
        "setup": setup,
        "assumptions": assumptions,
        "record_fields": list(RECORD_FIELDS),
        "records": records,
    }


def write_timing(path: Path, document: dict[str, Any]) -> None:
    """Write ``timing.json`` atomically."""
    write_text(path, json.dumps(document, indent=1) + "\n")
