"""NVTX emission behind a tiny interface, so tests can record the ranges without nsys.

The worker never calls the ``nvtx`` package directly: it pushes and pops through the current
:class:`RangeEmitter` (:func:`emitter`), which is :class:`NvtxEmitter` unless a test installs a
:class:`RecordingEmitter` with :func:`use_emitter`. Integer payloads (repeat, page and step
indices) are sent as NVTX int64 payloads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import attrs

from dsocr.contract import nvtx_names as names


class RangeEmitter(Protocol):
    """Pushes and pops nested ranges (one stack per domain and thread, as NVTX does)."""

    def push(self, name: str, domain: str, payload: int | None = None) -> None:
        """Open range ``name`` in ``domain``, with an optional int64 payload."""

    def pop(self, domain: str) -> None:
        """Close the innermost open range of ``domain``."""


#: The NVTX category of every range this process emits (None: none). A worker of a data-parallel
#: capture sets its rank + 1 (:func:`set_category`), so each range says which worker, hence which
#: device, ran it (docs/nvtx-contract.md).
_category: list[int | None] = [None]


def set_category(category: int | None) -> None:
    """Give every range emitted from now on this NVTX category (an int > 0, or None)."""
    _category[0] = category


def category() -> int | None:
    """The NVTX category ranges get now (:func:`set_category`)."""
    return _category[0]


class NvtxEmitter:
    """Emits through the ``nvtx`` package (registered strings, domain handles cached by nvtx)."""

    def __init__(self) -> None:
        import nvtx

        self._nvtx: Any = nvtx

    def push(self, name: str, domain: str, payload: int | None = None) -> None:
        """``nvtx.push_range`` in ``domain`` (with the process's category, if set)."""
        self._nvtx.push_range(message=name, domain=domain, payload=payload, category=_category[0])

    def pop(self, domain: str) -> None:
        """``nvtx.pop_range`` in ``domain``."""
        self._nvtx.pop_range(domain=domain)


@attrs.frozen
class RangeEvent:
    """One recorded push or pop."""

    kind: str  #: ``push`` or ``pop``
    domain: str
    name: str | None = None
    payload: int | None = None


@attrs.define
class RecordingEmitter:
    """Records every push/pop instead of emitting (for tests)."""

    events: list[RangeEvent] = attrs.field(factory=list)

    def push(self, name: str, domain: str, payload: int | None = None) -> None:
        """Record a push."""
        self.events.append(RangeEvent("push", domain, name, payload))

    def pop(self, domain: str) -> None:
        """Record a pop."""
        self.events.append(RangeEvent("pop", domain))

    def tree(self, domain: str = names.DOMAIN) -> list[tuple[int, str, int | None]]:
        """The ranges of ``domain`` in order as (depth, name, payload); raises on unbalanced pops."""
        out: list[tuple[int, str, int | None]] = []
        depth = 0
        for ev in self.events:
            if ev.domain != domain:
                continue
            if ev.kind == "push":
                out.append((depth, str(ev.name), ev.payload))
                depth += 1
            else:
                depth -= 1
                if depth < 0:
                    raise AssertionError(f"pop without push in domain {domain}")
        if depth != 0:
            raise AssertionError(f"{depth} ranges left open in domain {domain}")
        return out


_current: list[RangeEmitter] = []


def emitter() -> RangeEmitter:
    """The emitter in use (an :class:`NvtxEmitter`, created on first use)."""
    if not _current:
        _current.append(NvtxEmitter())
    return _current[-1]


@contextlib.contextmanager
def use_emitter(em: RangeEmitter) -> Iterator[RangeEmitter]:
    """Use ``em`` for every range opened inside the block."""
    _current.append(em)
    try:
        yield em
    finally:
        _current.remove(em)


@contextlib.contextmanager
def nvtx_range(name: str, payload: int | None = None, domain: str = names.DOMAIN) -> Iterator[None]:
    """One range of the contract: pushed on entry, popped on exit (also on errors)."""
    em = emitter()
    em.push(name, domain, payload)
    try:
        yield
    finally:
        em.pop(domain)
