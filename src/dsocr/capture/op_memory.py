"""The operator-memory pass of ``dsocr capture --op-memory``: one extra pass under the PyTorch profiler.

nsys sees only cudaMalloc, and the caching allocator serves almost every tensor from its pool
after warm-up, so the allocator's own view is taken instead: one pass over all pages, after the
capture range closed (the trace is unaffected), under ``torch.profiler.profile(profile_memory=True)``
(CPU activity only: no CUPTI next to nsys). Each stage is a ``record_function`` range, so every
operator call is tied to its innermost stage; each call's own net allocation (children excluded,
``self_device_memory_usage`` on CUDA, ``self_cpu_memory_usage`` on the CPU) is summed per
(stage, operator). Peaks: on CUDA ``torch.cuda.max_memory_allocated``, reset when a stage opens
and folded into every enclosing open stage; the rise above the stage's start level on the CPU
comes from the calls' net allocations in start order.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs

from dsocr.contract.op_memory import MEASURES, OperatorMemory, OpMemory, StageMemory

#: Prefix of the profiler ranges that mark stages in the pass.
STAGE_PREFIX: Final = "dsocr.stage:"
TOP_N: Final = 20


@attrs.define
class _Open:
    name: str
    start: int
    peak: int


@attrs.define
class _StagePeak:
    instances: int = 0
    peak: int | None = None
    increase: int = 0


class StageMarks:
    """The stage hook of the pass: a profiler range per stage instance and, on CUDA, its peak."""

    def __init__(self, torch: Any, cuda: bool) -> None:
        self.torch = torch
        self.cuda = cuda
        self.open: list[_Open] = []
        self.peaks: dict[str, _StagePeak] = {}

    def _fold(self) -> None:
        peak = int(self.torch.cuda.max_memory_allocated())
        for o in self.open:
            o.peak = max(o.peak, peak)
        self.torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Mark one stage instance."""
        with self.torch.profiler.record_function(STAGE_PREFIX + name):
            if self.cuda:
                self._fold()
                now = int(self.torch.cuda.memory_allocated())
                self.open.append(_Open(name, now, now))
            try:
                yield
            finally:
                entry = self.peaks.setdefault(name, _StagePeak())
                entry.instances += 1
                if self.cuda:
                    self._fold()
                    o = self.open.pop()
                    entry.peak = max(entry.peak or 0, o.peak)
                    entry.increase = max(entry.increase, o.peak - o.start)


def _stage_of(event: Any) -> str | None:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(STAGE_PREFIX):
            return str(parent.name[len(STAGE_PREFIX) :])
        parent = parent.cpu_parent
    return None


def _cpu_increases(events: list[Any], stage_events: list[Any]) -> dict[str, int]:
    """Per stage name: the most its calls' net allocations rose above the start level (start order)."""
    calls = sorted(((e.time_range.start, int(e.self_cpu_memory_usage)) for e in events), key=lambda c: c[0])
    starts = [c[0] for c in calls]
    out: dict[str, int] = {}
    for s in stage_events:
        lo = bisect.bisect_left(starts, s.time_range.start)
        hi = bisect.bisect_right(starts, s.time_range.end)
        rise = max(itertools.accumulate((c[1] for c in calls[lo:hi]), initial=0))
        name = s.name[len(STAGE_PREFIX) :]
        out[name] = max(out.get(name, 0), rise)
    return out


def summarize(events: list[Any], marks: StageMarks, device: str, torch_version: str | None, top_n: int) -> OpMemory:
    """The op_memory document of the profiler's events (``prof.events()``)."""
    cuda = marks.cuda
    stage_events = [e for e in events if e.name.startswith(STAGE_PREFIX)]
    ops = [e for e in events if not e.name.startswith(STAGE_PREFIX) and not e.is_user_annotation]
    per: dict[tuple[str, str], list[int]] = {}
    for e in ops:
        stage = _stage_of(e)
        if stage is None:
            continue
        net = int(e.self_device_memory_usage if cuda else e.self_cpu_memory_usage)
        acc = per.setdefault((stage, e.name), [0, 0, 0, 0])  # calls, allocations, allocated, freed
        acc[0] += 1
        if net > 0:
            acc[1] += 1
            acc[2] += net
        elif net < 0:
            acc[3] -= net
    increases = {} if cuda else _cpu_increases(ops, stage_events)
    stages = []
    for name, peak in marks.peaks.items():
        rows = [
            OperatorMemory(op, calls=a[0], allocations=a[1], allocated_bytes=a[2], freed_bytes=a[3])
            for (stage, op), a in per.items()
            if stage == name
        ]
        rows.sort(key=lambda r: (-r.allocated_bytes, -r.allocations, r.operator))
        stages.append(
            StageMemory(
                stage=name,
                instances=peak.instances,
                allocated_bytes=sum(r.allocated_bytes for r in rows),
                freed_bytes=sum(r.freed_bytes for r in rows),
                allocations=sum(r.allocations for r in rows),
                peak_bytes=peak.peak if cuda else None,
                peak_increase_bytes=peak.increase if cuda else increases.get(name, 0),
                operators=tuple(rows[:top_n]),
                operators_total=len(rows),
            )
        )
    return OpMemory(device=device, measures=MEASURES, stages=tuple(stages), top_n=top_n, torch=torch_version)


def measure(torch: Any, device: str, run_pass: Callable[[StageMarks], None], top_n: int = TOP_N) -> OpMemory:
    """Run ``run_pass(marks)`` once under the profiler with memory recording; its op_memory document."""
    cuda = device.startswith("cuda")
    marks = StageMarks(torch, cuda)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=False) as prof:
        run_pass(marks)
        if cuda:
            torch.cuda.synchronize()
    return summarize(list(prof.events()), marks, device, str(torch.__version__), top_n)
