"""What ``dsocr whatif run`` and ``dsocr whatif report`` agree on: the variants of one workload and the
``whatif.json`` index of a what-if directory (one run directory per variant beside it; docs/whatif.md).

A variant is a name and execution settings (``graph=moe=grouped,decode=graph``); the baseline is the
variant named :data:`BASELINE`. The index is versioned JSON, written atomically after every variant, so
an interrupted what-if still names what ran.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.atomic import write_text
from dsocr.contract.errors import BadInput, BadUsage
from dsocr.contract.rundocs import read_doc

SCHEMA: Final = "dsocr.whatif"
VERSION: Final = "1.0"
INDEX: Final = "whatif.json"
BASELINE: Final = "baseline"

#: The execution settings a variant may change, and the values each takes (``batch``: a positive integer).
VARIANT_VALUES: Final[Mapping[str, tuple[str, ...]]] = {
    "moe": ("loop", "grouped"),
    "attn": ("eager", "sdpa", "flash_attention_2"),
    "decode": ("eager", "graph", "compile"),
    "dtype": ("auto", "bfloat16", "float16", "float32"),
    "batch": (),
}
#: What a missing key means (timing.json's ``model.execution`` without it: today's execution).
DEFAULTS: Final[Mapping[str, str]] = {"decode": "eager", "batch": "1", "cache": "dynamic"}
_DTYPE_ALIASES: Final = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")

#: Statuses of an index entry.
PENDING: Final = "pending"
COMPLETE: Final = "complete"
FAILED: Final = "failed"
OUT_OF_MEMORY: Final = "out-of-memory"
SKIPPED: Final = "skipped"
STATUSES: Final = (PENDING, COMPLETE, FAILED, OUT_OF_MEMORY, SKIPPED)


@attrs.frozen
class Variant:
    """One named execution of the workload: the settings it changes from the baseline's, in the given order."""

    name: str
    settings: tuple[tuple[str, str], ...] = ()
    profiled: bool = False  #: captured under nsys too (``--profile NAME``)

    def get(self, key: str) -> str | None:
        """The value this variant sets for ``key`` (None: the baseline's)."""
        return dict(self.settings).get(key)

    def describe(self) -> str:
        """``moe=grouped, decode=graph`` (``as the baseline`` when it changes nothing)."""
        return ", ".join(f"{k}={v}" for k, v in self.settings) or "as the baseline"


def check_value(key: str, value: str, where: str) -> str:
    """``value`` of variant key ``key`` normalized; BadUsage naming ``where`` (the flag) when it is not one."""
    if key not in VARIANT_VALUES:
        raise BadUsage(
            f"{where}: unknown variant key {key!r}; use one of {', '.join(VARIANT_VALUES)} "
            "(e.g. moe=grouped,decode=graph)"
        )
    v = value.strip().lower()
    if key == "dtype":
        v = _DTYPE_ALIASES.get(v, v)
    if key == "batch":
        if not v.isdigit() or int(v) < 1:
            raise BadUsage(f"{where}: batch={value!r} is not a positive whole number of pages; use e.g. batch=8")
        return str(int(v))
    if v not in VARIANT_VALUES[key]:
        raise BadUsage(f"{where}: {key}={value!r} is unknown; use one of {', '.join(VARIANT_VALUES[key])}")
    return v


def parse_variant(text: str) -> Variant:
    """``NAME=key=value,key=value`` (``--variant``) as a Variant; BadUsage (exit 2) on any fault."""
    where = f"--variant {text!r}"
    name, eq, rest = text.strip().partition("=")
    name = name.strip()
    if not eq or not rest.strip():
        raise BadUsage(f"{where}: give NAME=key=value[,key=value...], e.g. graph=moe=grouped,decode=graph")
    check_name(name, where)
    settings: dict[str, str] = {}
    for part in rest.split(","):
        key, eq2, value = part.partition("=")
        key = key.strip().lower()
        if not eq2 or not key or not value.strip():
            raise BadUsage(f"{where}: {part.strip()!r} is not key=value; e.g. moe=grouped")
        if key in settings:
            raise BadUsage(f"{where}: {key} is given twice; give each key once")
        settings[key] = check_value(key, value, where)
    return Variant(name, tuple(settings.items()))


def check_name(name: str, where: str) -> None:
    """A variant name is a directory name: lower-case letters, digits, ``_.-``; not ``baseline``."""
    if not _NAME.match(name):
        raise BadUsage(
            f"{where}: variant name {name!r} is not usable as a directory name; use lower-case letters, digits, "
            "'_', '.', '-' (at most 40 characters)"
        )
    if name == BASELINE:
        raise BadUsage(f"{where}: the name {BASELINE!r} is the baseline's own; choose another name")


def check_unique(variants: tuple[Variant, ...]) -> None:
    """BadUsage on two variants with one name."""
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise BadUsage(f"--variant: the name {v.name!r} is given twice; give every variant its own name")
        seen.add(v.name)


@attrs.frozen
class Entry:
    """One variant of a what-if directory and what became of it."""

    variant: Variant
    run_dir: str  #: relative to the index's directory
    status: str = PENDING
    message: str | None = None


@attrs.frozen
class Sweep:
    """A batch sweep: the batches asked for, the variant each became, where it stopped and why."""

    batches: tuple[int, ...]
    settings: tuple[tuple[str, str], ...]  #: what every sweep point sets besides ``batch``
    stopped_at: int | None = None  #: the first batch that did not run (out of memory), None: all ran
    reason: str | None = None


@attrs.frozen
class WhatIfIndex:
    """``whatif.json``: the baseline first, then every variant, each with its run directory and status."""

    created: str
    command: tuple[str, ...]
    entries: tuple[Entry, ...]
    sweep: Sweep | None = None

    @property
    def baseline(self) -> Entry:
        """The baseline's entry (the first)."""
        return self.entries[0]

    def to_json(self) -> dict[str, Any]:
        """The JSON document."""
        return {"schema": SCHEMA, "version": VERSION, **attrs.asdict(self, recurse=True)}

    def write(self, directory: Path) -> None:
        """Write ``directory/whatif.json`` atomically."""
        write_text(directory / INDEX, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> WhatIfIndex:
        """Read a ``whatif.json`` document; BadInput naming ``where`` if it is not one this dsocr reads."""
        if doc.get("schema") != SCHEMA or str(doc.get("version", "")).split(".")[0] != VERSION.split(".")[0]:
            raise BadInput(f"{where}: not a {SCHEMA} {VERSION} document; pass a what-if directory's {INDEX}")
        try:
            entries = tuple(
                Entry(
                    Variant(
                        str(e["variant"]["name"]),
                        tuple((str(k), str(v)) for k, v in e["variant"]["settings"]),
                        bool(e["variant"]["profiled"]),
                    ),
                    str(e["run_dir"]),
                    str(e["status"]),
                    None if e.get("message") is None else str(e["message"]),
                )
                for e in doc["entries"]
            )
            sw = doc.get("sweep")
            sweep = (
                Sweep(
                    tuple(int(b) for b in sw["batches"]),
                    tuple((str(k), str(v)) for k, v in sw["settings"]),
                    None if sw.get("stopped_at") is None else int(sw["stopped_at"]),
                    sw.get("reason"),
                )
                if sw
                else None
            )
            out = cls(str(doc["created"]), tuple(str(c) for c in doc["command"]), entries, sweep)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(
                f"{where}: corrupt {INDEX} ({type(exc).__name__}: {exc}); run `dsocr whatif run` again"
            ) from None
        if not entries or entries[0].variant.name != BASELINE:
            raise BadInput(f"{where}: {INDEX} names no baseline first; run `dsocr whatif run` again")
        return out


def read_index(path: Path) -> WhatIfIndex | None:
    """The index in ``path`` (a what-if directory or its ``whatif.json``); None when there is none; BadInput if
    it is there but unusable."""
    file = path / INDEX if path.is_dir() else path
    doc, problem = read_doc(file)
    if problem is not None:
        raise BadInput(f"{problem}; run `dsocr whatif run` again")
    return None if doc is None else WhatIfIndex.from_json(doc, str(file))
