"""The worker -> driver progress protocol: one JSON object per line on the worker's stdout.

The worker (``python -m dsocr.capture.worker``) prints lines such as::

    @dsocr {"event": "page_done", "repeat": 0, "page": 3}

and the driver, which reads the worker's stdout (through ``nsys profile``, which passes it
on), parses them with :func:`parse` to drive its progress bar and to name what was running
when the worker failed. Any other line is ordinary output and is passed through or logged.

Events, in order (fields besides ``event``):

- ``started``: ``pid``
- ``inputs_ready``: ``pages`` (count), ``repeats``
- ``model_ready``: ``seconds`` (time to build/load the model), ``warmup`` (rounds about to run)
- ``warmup_done``: ``rounds``
- ``capture_start``: ``capture_warmup`` (passes of the capture warm-up about to run; absent from
  older workers: none)
- ``page_done`` during the capture warm-up: ``warmup`` (the pass), ``page``, once per pass x page
- ``capture_warmup_done``: ``rounds``, ``seconds`` (only when the capture warm-up ran)
- ``page_done``: ``repeat``, ``page`` (0-based indices), once per repeat x page
- ``capture_end``
- ``finished``: ``timing`` (path of the timing file written)
- ``failed``: ``kind`` (``oom`` | ``error``), ``what`` (what was being run, e.g.
  ``"repeat 1 page 3 prefill (gundam, 2x3 crops)"``), ``message`` (one line)
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final, TextIO

import attrs

PREFIX: Final = "@dsocr "

STARTED: Final = "started"
INPUTS_READY: Final = "inputs_ready"
MODEL_READY: Final = "model_ready"
WARMUP_DONE: Final = "warmup_done"
CAPTURE_START: Final = "capture_start"
CAPTURE_WARMUP_DONE: Final = "capture_warmup_done"
PAGE_DONE: Final = "page_done"
CAPTURE_END: Final = "capture_end"
FINISHED: Final = "finished"
FAILED: Final = "failed"

EVENTS: Final[tuple[str, ...]] = (
    STARTED,
    INPUTS_READY,
    MODEL_READY,
    WARMUP_DONE,
    CAPTURE_START,
    CAPTURE_WARMUP_DONE,
    PAGE_DONE,
    CAPTURE_END,
    FINISHED,
    FAILED,
)

#: ``failed`` kinds.
KIND_OOM: Final = "oom"
KIND_ERROR: Final = "error"


@attrs.frozen
class ProgressEvent:
    """One parsed progress line."""

    event: str
    fields: dict[str, Any] = attrs.field(factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the event, or ``default``."""
        return self.fields.get(key, default)


def format_event(event: str, **fields: Any) -> str:
    """The line (without newline) that announces ``event`` with ``fields``."""
    if event not in EVENTS:
        raise ValueError(f"unknown progress event {event!r}; known: {', '.join(EVENTS)}")
    return PREFIX + json.dumps({"event": event, **fields}, separators=(",", ":"), sort_keys=False)


def emit(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Print one progress line (flushed at once) on ``stream`` (default: stdout)."""
    out = stream if stream is not None else sys.stdout
    out.write(format_event(event, **fields) + "\n")
    out.flush()


def parse(line: str) -> ProgressEvent | None:
    """The event a line announces, or None for ordinary output (or a garbled progress line)."""
    text = line.strip()
    if not text.startswith(PREFIX):
        return None
    try:
        data = json.loads(text[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    event = data.pop("event")
    return ProgressEvent(event=event, fields=data)


def worker_step(event: ProgressEvent, counts: dict[str, int], profiled: bool) -> tuple[str, int | None] | None:
    """The worker sub-phase an event starts, as (description, steps or None), or None if it starts none.

    Sub-phases, in order: preparing the inputs, loading the model, warm-up, the capture warm-up
    (passes x pages, when it runs), repeats x pages, and after the pass the timing file (and under
    nsys its report). ``counts`` keeps what ``inputs_ready`` said (pages, repeats) for the bars.
    """
    if event.event == STARTED:
        return "preparing the inputs", None
    if event.event == INPUTS_READY:
        counts.update({k: int(event.get(k) or 0) for k in ("pages", "repeats")})
        return "loading the model", None
    if event.event == MODEL_READY:
        rounds = event.get("warmup")
        what = f"warm-up ({rounds} round{'s' if rounds != 1 else ''})" if rounds is not None else "warm-up"
        return f"{what}, model loaded in {float(event.get('seconds') or 0.0):.1f} s", None
    if event.event == CAPTURE_START:
        passes = int(event.get("capture_warmup") or 0)
        if passes:
            return _passes_row("capture warm-up (", passes, "pass", "passes", counts, ")")
        return _passes_row("", counts.get("repeats", 0), "repeat", "repeats", counts, "")
    if event.event == CAPTURE_WARMUP_DONE:
        return _passes_row("", counts.get("repeats", 0), "repeat", "repeats", counts, "")
    if event.event == CAPTURE_END:
        return "writing the timing file", None
    if event.event == FINISHED and profiled:
        return "nsys writing the report", None
    return None


def _passes_row(before: str, n: int, one: str, many: str, counts: dict[str, int], after: str) -> tuple[str, int | None]:
    """``N passes x P pages`` with its bar's total (one step per page)."""
    pages = counts.get("pages", 0)
    what = f"{n} {one if n == 1 else many} x {pages} page{'s' if pages != 1 else ''}"
    return f"{before}{what}{after}", (n * pages) or None
