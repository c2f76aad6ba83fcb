"""``dsocr capture``'s progress display: one row per phase and per worker sub-phase."""

from __future__ import annotations

import io

from rich.console import Console

from dsocr.capture import progress
from dsocr.capture.progress import ProgressEvent, worker_step
from dsocr.cli.capture import RichReporter
from dsocr.cli.common import Ui


def _events(repeats: int, pages: int, warmup: int = 2, capture_warmup: int | None = None) -> list[ProgressEvent]:
    """A worker's events; ``capture_warmup`` None: an older worker (no capture warm-up, no field)."""
    passes = [ProgressEvent(progress.PAGE_DONE, {"repeat": r, "page": p}) for r in range(repeats) for p in range(pages)]
    n = capture_warmup or 0
    warm = [ProgressEvent(progress.PAGE_DONE, {"warmup": r, "page": p}) for r in range(n) for p in range(pages)]
    done = [ProgressEvent(progress.CAPTURE_WARMUP_DONE, {"rounds": n, "seconds": 1.5})] if n else []
    start = {} if capture_warmup is None else {"capture_warmup": capture_warmup}
    return [
        ProgressEvent(progress.STARTED, {"pid": 1}),
        ProgressEvent(progress.INPUTS_READY, {"pages": pages, "repeats": repeats}),
        ProgressEvent(progress.MODEL_READY, {"seconds": 73.25, "warmup": warmup}),
        ProgressEvent(progress.WARMUP_DONE, {"rounds": warmup}),
        ProgressEvent(progress.CAPTURE_START, start),
        *warm,
        *done,
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


def test_capture_warmup_has_its_own_row() -> None:
    counts: dict[str, int] = {}
    got = [s for e in _events(3, 4, capture_warmup=2) if (s := worker_step(e, counts, profiled=True)) is not None]
    assert got[3:5] == [("capture warm-up (2 passes x 4 pages)", 8), ("3 repeats x 4 pages", 12)]
    counts = {}
    got = [s for e in _events(3, 1, capture_warmup=1) if (s := worker_step(e, counts, profiled=True)) is not None]
    assert got[3:5] == [("capture warm-up (1 pass x 1 page)", 1), ("3 repeats x 1 page", 3)]
    counts = {}  # --capture-warmup 0: straight to the repeats
    got = [s for e in _events(3, 4, capture_warmup=0) if (s := worker_step(e, counts, profiled=True)) is not None]
    assert got[3:5] == [("3 repeats x 4 pages", 12), ("writing the timing file", None)]


def test_rich_reporter_rows() -> None:
    ui = Ui()
    ui.err = Console(file=io.StringIO(), force_terminal=True, width=200)
    rep = RichReporter(ui)
    with rep:
        rep.phase("prepare", "checking inputs", None)
        rep.phase("profile", "profiling under nsys 2025.3.2", 2)
        for e in _events(1, 2, warmup=1, capture_warmup=1):
            rep.step(e)
        rep.phase("export", "exporting the trace to SQLite", None)
    rows = [(t.description, t.total, t.completed) for t in rep._progress.tasks]
    assert rows == [
        ("checking inputs", 1, 1),
        ("profiling under nsys 2025.3.2", 1, 1),  # waiting for the worker
        ("profiling under nsys 2025.3.2: preparing the inputs", 1, 1),
        ("profiling under nsys 2025.3.2: loading the model", 1, 1),
        ("profiling under nsys 2025.3.2: warm-up (1 round), model loaded in 73.2 s", 1, 1),
        ("profiling under nsys 2025.3.2: capture warm-up (1 pass x 2 pages)", 2, 2),
        ("profiling under nsys 2025.3.2: 1 repeat x 2 pages", 2, 2),
        ("profiling under nsys 2025.3.2: writing the timing file", 1, 1),
        ("profiling under nsys 2025.3.2: nsys writing the report", 1, 1),
        ("exporting the trace to SQLite", 1, 1),
    ]
