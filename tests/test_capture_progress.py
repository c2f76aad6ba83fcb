"""``dsocr capture``'s progress display: one row per phase and per worker sub-phase."""

from __future__ import annotations

import io

from rich.console import Console

from dsocr.capture import progress
from dsocr.capture.progress import ProgressEvent, worker_step
from dsocr.cli.capture import RichReporter
from dsocr.cli.common import Ui


def _events(repeats: int, pages: int, warmup: int = 2) -> list[ProgressEvent]:
    passes = [ProgressEvent(progress.PAGE_DONE, {"repeat": r, "page": p}) for r in range(repeats) for p in range(pages)]
    return [
        ProgressEvent(progress.STARTED, {"pid": 1}),
        ProgressEvent(progress.INPUTS_READY, {"pages": pages, "repeats": repeats}),
        ProgressEvent(progress.MODEL_READY, {"seconds": 73.25, "warmup": warmup}),
        ProgressEvent(progress.WARMUP_DONE, {"rounds": warmup}),
        ProgressEvent(progress.CAPTURE_START),
        *passes,
        ProgressEvent(progress.CAPTURE_END),
        ProgressEvent(progress.FINISHED, {"timing": "timing.json"}),
    ]


def test_worker_sub_phases_in_order() -> None:
    counts: dict[str, int] = {}
    got = [s for e in _events(3, 4) if (s := worker_step(e, counts, profiled=True)) is not None]
    assert got == [
        ("preparing the inputs", None),
        ("loading the model", None),
        ("warm-up (2 rounds), model loaded in 73.2 s", None),
        ("3 repeats x 4 pages", 12),
        ("writing the timing file", None),
        ("nsys writing the report", None),
    ]
    # an unprofiled baseline has no nsys report to wait for; an older worker says no warm-up rounds
    counts = {}
    old = ProgressEvent(progress.MODEL_READY, {"seconds": 1.0})
    assert worker_step(old, counts, profiled=False) == ("warm-up, model loaded in 1.0 s", None)
    assert worker_step(ProgressEvent(progress.FINISHED), counts, profiled=False) is None


def test_rich_reporter_rows() -> None:
    ui = Ui()
    ui.err = Console(file=io.StringIO(), force_terminal=True, width=200)
    rep = RichReporter(ui)
    with rep:
        rep.phase("prepare", "checking inputs", None)
        rep.phase("profile", "profiling under nsys 2025.3.2", 2)
        for e in _events(1, 2, warmup=1):
            rep.step(e)
        rep.phase("export", "exporting the trace to SQLite", None)
    rows = [(t.description, t.total, t.completed) for t in rep._progress.tasks]
    assert rows == [
        ("checking inputs", 1, 1),
        ("profiling under nsys 2025.3.2", 1, 1),  # waiting for the worker
        ("profiling under nsys 2025.3.2: preparing the inputs", 1, 1),
        ("profiling under nsys 2025.3.2: loading the model", 1, 1),
        ("profiling under nsys 2025.3.2: warm-up (1 round), model loaded in 73.2 s", 1, 1),
        ("profiling under nsys 2025.3.2: 1 repeat x 2 pages", 2, 2),
        ("profiling under nsys 2025.3.2: writing the timing file", 1, 1),
        ("profiling under nsys 2025.3.2: nsys writing the report", 1, 1),
        ("exporting the trace to SQLite", 1, 1),
    ]
