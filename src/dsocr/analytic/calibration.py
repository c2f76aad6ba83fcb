"""Calibrated prediction: the analytic model's primitives timed alone on the GPU, summed per stage/module.

The roofline assumes every kernel reaches the spec peak; eager PyTorch kernels do not (small
GEMMs, strided broadcasts, routing bookkeeping). ``dsocr calibrate`` runs every kernel signature
of a workload (:mod:`dsocr.analytic.signature`) alone, at its exact shape, with the PyTorch
operators the replica uses and a cold L2 cache, and writes ``calibration.json``
(docs/calibration-schema.md). Here the calibrated time of a set of operations is the sum over
their signatures of ``count x median time``; a signature the file lacks (or whose measurement
failed) falls back to the roofline time of its operation and is counted as missing.
Pure Python: the analysis needs neither torch nor a GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from dsocr.analytic.cost import Op
from dsocr.analytic.peaks import Peak
from dsocr.analytic.roofline import roofline
from dsocr.analytic.signature import Kernel, unique
from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.contract.paths import is_regular_file
from dsocr.contract.run_calibration import RunCalibration

if TYPE_CHECKING:
    from dsocr.analytic.workload import ModelEstimate


@attrs.frozen
class Calibration:
    """Median GPU time (ns) per kernel signature key, and where it was measured."""

    times: Mapping[str, float]
    gpu: str | None = None
    device: str | None = None
    dtype: str | None = None
    created: str | None = None
    source: str | None = None  #: the file it was read from
    failed: Mapping[str, str] = attrs.field(factory=dict)  #: key -> error of signatures that did not run
    #: Median time per key without an L2 flush between runs (CUDA calibrations; empty otherwise).
    warm: Mapping[str, float] = attrs.field(factory=dict)

    def warm_view(self) -> Calibration | None:
        """The same calibration with the warm times (None when it has none)."""
        if not self.warm:
            return None
        return attrs.evolve(self, times=self.warm, warm={})

    def describe(self) -> dict[str, Any]:
        """Provenance for analysis.json."""
        return {
            "source": self.source,
            "gpu": self.gpu,
            "device": self.device,
            "dtype": self.dtype,
            "created": self.created,
            "kernels": len(self.times),
            "failed": len(self.failed),
        }


def parse_calibration(doc: Any, source: str | None = None) -> Calibration:
    """A :class:`Calibration` from the parsed JSON of a calibration file (typed and checked by
    :class:`~dsocr.contract.run_calibration.RunCalibration`)."""
    return from_document(RunCalibration.from_json(doc, source or "calibration"), source)


def from_document(doc: RunCalibration, source: str | None = None) -> Calibration:
    """The times of a calibration document (a failed or timeless signature goes to ``failed``)."""
    times: dict[str, float] = {}
    warm: dict[str, float] = {}
    failed: dict[str, str] = {}
    for row in doc.kernels:
        key = str(row.key)
        if not row.usable or row.median_ns is None:
            failed[key] = str(row.error or "no time")
            continue
        times[key] = float(row.median_ns)
        if row.warm_median_ns is not None and row.warm_median_ns > 0:
            warm[key] = float(row.warm_median_ns)
    return Calibration(times, doc.gpu, doc.device, doc.dtype, doc.created, source, failed, warm)


def load_calibration(path: str | Path) -> Calibration:
    """Read a ``calibration.json`` (one-line :class:`BadInput` when it is missing or not one)."""
    p = Path(path)
    if os.path.exists(p) and not is_regular_file(p):  # a FIFO would block: never opened
        raise BadInput(f"{p}: not a regular file; pass the calibration.json written by `dsocr calibrate`")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputNotFound(f"{p}: calibration file not found; make one with `dsocr calibrate --out {p}`") from None
    except IsADirectoryError:
        raise BadInput(f"{p}: is a directory, not a calibration file; give the calibration.json in it") from None
    except UnicodeDecodeError:
        raise BadInput(f"{p}: not a text file, so not a calibration file; make one with `dsocr calibrate`") from None
    except OSError as e:
        raise InputNotFound(f"{p}: cannot read the calibration file ({e.strerror}); check its permissions") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(
            f"{p}: calibration file is not valid JSON (line {e.lineno}); make it again with `dsocr calibrate`"
        ) from None
    return parse_calibration(doc, str(p))


@attrs.frozen
class CalibratedTime:
    """Calibrated time of some operations and how much of it had to fall back to the roofline."""

    ns: float
    fallback_ns: float  #: part of ``ns`` from roofline times of missing signatures
    missing: tuple[str, ...]  #: signature keys the calibration lacks


def calibrated_time(ops: Iterable[Op], calibration: Calibration, peak: Peak) -> CalibratedTime:
    """Sum of ``count x calibrated time`` over the operations' signatures (roofline for missing ones)."""
    total = fallback = 0.0
    missing: dict[str, None] = {}
    for op in ops:
        if not op.kernels:
            continue
        for kernel, count in op.kernels:
            t = calibration.times.get(kernel.key)
            if t is None:
                missing[kernel.key] = None
                roof = roofline(op.cost, peak).predicted_ns or 0.0
                # the op's cost covers all its counts; share it over its signatures by count
                share = count / sum(c for _, c in op.kernels)
                fallback += roof * share
                total += roof * share
            else:
                total += count * t
    return CalibratedTime(total, fallback, tuple(missing))


def required_kernels(estimates: Iterable[ModelEstimate]) -> list[Kernel]:
    """The distinct kernel signatures of some estimates (what ``dsocr calibrate`` must time)."""
    return unique(
        k for e in estimates for s in e.stages for m in s.modules for op in m.all_ops() for k, _ in op.kernels
    )
