"""``calibration.json``: each kernel signature timed alone, typed (docs/calibration-schema.md).

Written by ``dsocr calibrate`` (``dsocr.capture.calibrate.calibration_document``), read by ``dsocr analyze``
(``dsocr.analytic.calibration.load_calibration`` turns it into the times the calibrated prediction sums).
Top-level keys this dsocr does not know (``dsocr calibrate``'s ``workload`` and later additions) are kept.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from dsocr.contract import jsondoc as jd
from dsocr.contract.errors import BadInput

SCHEMA: Final = "dsocr.calibration"
VERSION: Final = 1

_opt_str = jd.optional(jd.string)
_opt_int = jd.optional(jd.integer)
_opt_num = jd.optional(jd.number)
_opt_obj = jd.optional(jd.obj)


@attrs.frozen
class CalibrationKernel(jd.JsonDoc):
    """One signature (``kernels``): its times over the iterations (ns), or the error that stopped it."""

    key: str | None = jd.field(_opt_str)  #: the signature, e.g. ``linear[rows=4096,in=768,out=2304,bias=1]``
    kind: str | None = jd.field(_opt_str)
    params: dict[str, Any] | None = jd.field(_opt_obj)
    median_ns: float | None = jd.field(_opt_num)
    min_ns: float | None = jd.field(_opt_num)
    max_ns: float | None = jd.field(_opt_num)
    warm_median_ns: float | None = jd.field(_opt_num)  #: without an L2 flush between runs (CUDA)
    iterations: int | None = jd.field(_opt_int)
    error: str | None = jd.field(_opt_str)

    @property
    def usable(self) -> bool:
        """Whether it has a positive median and no error."""
        return not self.error and self.median_ns is not None and self.median_ns > 0


@attrs.frozen
class RunCalibration(jd.JsonDoc):
    """The whole ``calibration.json``."""

    schema: str | None = jd.field(_opt_str)
    version: int | None = jd.field(_opt_int)
    created: str | None = jd.field(_opt_str)
    gpu: str | None = jd.field(_opt_str)
    device: str | None = jd.field(_opt_str)
    dtype: str | None = jd.field(_opt_str)
    torch: str | None = jd.field(_opt_str)
    transformers: str | None = jd.field(_opt_str)
    method: dict[str, Any] | None = jd.field(_opt_obj)  #: iterations, warmup, l2_flush_bytes, timer
    kernels: tuple[CalibrationKernel, ...] = jd.field(jd.listed(jd.nested(CalibrationKernel)), (), dump=jd.dump_docs)

    @classmethod
    def from_json(cls, data: Any, source: str = "calibration") -> RunCalibration:
        """Build from JSON data; BadInput (one line naming ``source``) unless it is this schema and version, with
        a ``kernels`` list whose entries each have a ``key``, and every field of its type."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise BadInput(
                f"{source}: not a dsocr calibration file (schema is not {SCHEMA}); make one with `dsocr calibrate`"
            )
        if data.get("version") != VERSION:
            raise BadInput(
                f"{source}: calibration version {data.get('version')!r} is not supported (this dsocr reads {VERSION})"
            )
        if not isinstance(data.get("kernels"), list):
            raise BadInput(f'{source}: calibration file has no "kernels" list; make it again with `dsocr calibrate`')
        if any(not isinstance(row, dict) or not isinstance(row.get("key"), str) for row in data["kernels"]):
            raise BadInput(f'{source}: a calibration entry has no "key"; make the file again with `dsocr calibrate`')
        return jd.parse(cls, data, jd.Where(source))

    def text(self) -> str:
        """The document as written (``indent=2``)."""
        return json.dumps(self.to_json(), indent=2) + "\n"
