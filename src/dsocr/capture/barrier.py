"""A file barrier for the workers of one data-parallel capture (``--gpus N`` / ``--devices``).

Every worker of a capture opens and closes the capture range at the same moment: nsys collects
one session for all processes, and ``--capture-range-end=stop`` stops that collection at the first
range end it sees (``nsys profile --help``: "collection will stop at capture range end"), so a
worker that finished early would end the capture for the others. Before ``cudaProfilerStart`` (or
the CPU's ``capture`` range) and again before ``cudaProfilerStop`` each worker writes
``<dir>/<name>.<rank>`` and waits until all ``workers`` files of that name exist. The launcher
(:mod:`dsocr.capture.launcher`) stops every worker when one fails, so nobody waits forever; the
timeout is the last guard.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from dsocr.contract.errors import RunFailed

OPEN: Final = "open"
CLOSE: Final = "close"
#: How long a worker waits for the others at a barrier (model loading and warm-up of the slowest).
TIMEOUT_S: Final = 3600.0
_POLL_S: Final = 0.005


def arrive(directory: Path, name: str, rank: int) -> None:
    """Say that worker ``rank`` reached barrier ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.{rank}").write_text(f"{time.time_ns()}\n", encoding="utf-8")


def arrived(directory: Path, name: str) -> int:
    """How many workers reached barrier ``name``."""
    return sum(1 for _ in directory.glob(f"{name}.*"))


def wait(directory: Path, name: str, rank: int, workers: int, timeout_s: float = TIMEOUT_S) -> None:
    """Arrive at barrier ``name`` and wait for all ``workers``; RunFailed after ``timeout_s``."""
    arrive(directory, name, rank)
    deadline = time.monotonic() + timeout_s
    while arrived(directory, name) < workers:
        if time.monotonic() > deadline:
            raise RunFailed(
                f"worker {rank}: only {arrived(directory, name)} of {workers} workers reached the '{name}' barrier "
                f"in {timeout_s:.0f} s ({directory}); see the other workers' lines in the capture log"
            )
        time.sleep(_POLL_S)
