"""``op_memory.json``: the allocator's view of memory per operator and stage (docs/op-memory-schema.md).

Written by ``dsocr capture --op-memory`` (one extra pass under the PyTorch profiler with memory
recording), read by ``dsocr analyze``. Small by design: per stage its totals, its peak and its
top operators by allocated bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.atomic import write_text
from dsocr.contract.errors import BadInput

SCHEMA: Final = "dsocr.op_memory"
SCHEMA_VERSION: Final = "1.0"

#: What the numbers measure (the report prints it under the table).
MEASURES: Final = (
    "the PyTorch caching allocator's allocations requested by each aten operator itself (its children excluded) "
    "during one extra pass after the capture, recorded by torch.profiler (profile_memory=True), not by nsys: "
    "allocated = bytes each call still held when it returned (outputs, kept buffers), summed over calls; "
    "peak = the most memory allocated while the stage ran"
)


@attrs.frozen
class OperatorMemory:
    """One operator within one stage, summed over its calls in the pass."""

    operator: str  #: e.g. ``aten::mm``
    calls: int
    allocations: int  #: calls that left bytes allocated
    allocated_bytes: int  #: sum of the calls' positive net allocations
    freed_bytes: int  #: sum of the calls' negative net allocations (as a positive number)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return attrs.asdict(self)


@attrs.frozen
class StageMemory:
    """One stage name, summed over its instances in the pass (innermost stage of each operator call)."""

    stage: str
    instances: int
    allocated_bytes: int
    freed_bytes: int
    allocations: int
    #: the most memory allocated while any instance ran (CUDA: ``torch.cuda.max_memory_allocated``
    #: reset per stage; None on the CPU, where the allocator keeps no peak)
    peak_bytes: int | None
    #: the most the stage's allocations rose above their level at the stage's start (both devices)
    peak_increase_bytes: int
    operators: tuple[OperatorMemory, ...]  #: top operators by allocated bytes
    operators_total: int  #: distinct operators in the stage (``operators`` keeps the top ones)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = attrs.asdict(self, recurse=False)
        data["operators"] = [o.to_json() for o in self.operators]
        return data


@attrs.frozen
class OpMemory:
    """The whole ``op_memory.json`` document."""

    device: str
    measures: str
    stages: tuple[StageMemory, ...]
    top_n: int
    schema: str = SCHEMA
    schema_version: str = SCHEMA_VERSION
    torch: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "device": self.device,
            "torch": self.torch,
            "measures": self.measures,
            "top_n": self.top_n,
            "stages": [s.to_json() for s in self.stages],
        }

    def write(self, path: Path) -> None:
        """Write atomically."""
        write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, data: Any, source: str = "op_memory.json") -> OpMemory:
        """Build from JSON data; BadInput names the file and the problem."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise BadInput(f"{source} is not a {SCHEMA} document: re-capture with --op-memory")
        major = str(data.get("schema_version", "")).split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise BadInput(
                f"{source} has schema_version {data.get('schema_version')!r}, this dsocr reads "
                f"{SCHEMA_VERSION}: re-capture with --op-memory or use a matching dsocr"
            )
        try:
            stages = tuple(
                StageMemory(
                    **{
                        **{k: v for k, v in s.items() if k != "operators"},
                        "operators": tuple(OperatorMemory(**o) for o in s["operators"]),
                    }
                )
                for s in data["stages"]
            )
            doc = cls(
                device=str(data["device"]),
                measures=str(data["measures"]),
                stages=stages,
                top_n=int(data["top_n"]),
                schema_version=str(data["schema_version"]),
                torch=data.get("torch"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"{source} is malformed ({exc!r}): re-capture with --op-memory") from None
        for s in doc.stages:
            numbers = [s.instances, s.allocated_bytes, s.freed_bytes, s.allocations, s.peak_increase_bytes]
            numbers += [v for o in s.operators for v in (o.calls, o.allocations, o.allocated_bytes, o.freed_bytes)]
            if s.peak_bytes is not None:
                numbers.append(s.peak_bytes)
            if not isinstance(s.stage, str) or any(not isinstance(v, int) or isinstance(v, bool) for v in numbers):
                raise BadInput(f"{source}: stage {s.stage!r} has a non-integer count: re-capture with --op-memory")
        return doc

    @classmethod
    def read(cls, path: Path) -> OpMemory:
        """Read ``path``; BadInput when it is not valid JSON or not this document."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"{path} is not valid JSON ({exc}): re-capture with --op-memory") from None
        return cls.from_json(data, source=str(path))
