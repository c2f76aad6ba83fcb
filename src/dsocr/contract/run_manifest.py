"""``manifest.json``: everything needed to reproduce and trust a capture, typed (``dsocr.capture.manifest``).

Written by the capture driver at the start of a capture with status ``running`` and rewritten
(atomically) at every phase; read by ``dsocr analyze``, ``dsocr diff``, ``dsocr pages`` and the
re-export. The parts a reader uses are typed (``settings``' compared fields, ``inputs``, ``timing.runs``,
``commands.profile``); the free-form facts (environment, nsys, ranges, ...) are JSON objects. Keys
this dsocr does not know are kept and written back in place (:mod:`dsocr.contract.jsondoc`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract import jsondoc as jd
from dsocr.contract.rundocs import read_doc

SCHEMA_VERSION: Final = "1.0"
KIND: Final = "dsocr-capture"
STATUS_RUNNING: Final = "running"
STATUS_COMPLETE: Final = "complete"
STATUS_INTERRUPTED: Final = "interrupted"
STATUS_FAILED: Final = "failed"
STATUSES: Final = (STATUS_RUNNING, STATUS_COMPLETE, STATUS_INTERRUPTED, STATUS_FAILED)

_opt_str = jd.optional(jd.string)
_opt_int = jd.optional(jd.integer)
_opt_num = jd.optional(jd.number)
_opt_bool = jd.optional(jd.boolean)
_opt_obj = jd.optional(jd.obj)
_strings = jd.listed(jd.string)


@attrs.frozen
class ManifestSettings(jd.JsonDoc):
    """``settings``: every capture option (``CaptureSettings.to_json``); the compared ones typed, the rest in
    ``extra``."""

    repeats: int | None = jd.field(_opt_int)
    pages: tuple[str, ...] | None = jd.field(jd.optional(_strings), dump=jd.dump_list)
    mode: str | None = jd.field(_opt_str)
    crops: str | None = jd.field(_opt_str)
    max_new_tokens: int | None = jd.field(_opt_int)
    prompt_tokens: int | None = jd.field(_opt_int)
    device: str | None = jd.field(_opt_str)
    dtype: str | None = jd.field(_opt_str)
    op_ranges: bool | None = jd.field(_opt_bool)
    module_ranges: bool | None = jd.field(_opt_bool)
    baseline: bool | None = jd.field(_opt_bool)
    baseline_runs: int | None = jd.field(_opt_int)
    devices: tuple[str, ...] | None = jd.field(jd.optional(_strings), dump=jd.dump_list)  #: ``--devices``


@attrs.frozen
class ManifestInput(jd.JsonDoc):
    """One input page (``inputs``) with its file's SHA-256."""

    path: str | None = jd.field(_opt_str)
    name: str | None = jd.field(_opt_str)
    sha256: str | None = jd.field(_opt_str)
    width: int | None = jd.field(_opt_int)
    height: int | None = jd.field(_opt_int)
    pdf_page: int | None = jd.field(_opt_int)
    dpi: float | None = jd.field(_opt_num)


@attrs.frozen
class TimingRun(jd.JsonDoc):
    """One worker run (``timing.runs``), in execution order."""

    file: str | None = jd.field(_opt_str)
    role: str | None = jd.field(_opt_str)  #: ``baseline`` or ``profiled``
    position: str | None = jd.field(_opt_str)  #: ``before``, ``after`` (the profiled run) or ``profiled``
    k: int | None = jd.field(_opt_int)
    started: str | None = jd.field(_opt_str)
    finished: str | None = jd.field(_opt_str)
    seconds: float | None = jd.field(_opt_num)


@attrs.frozen
class ManifestTiming(jd.JsonDoc):
    """``timing``: the worker runs' timing files."""

    profiled: str | None = jd.field(_opt_str)
    baseline: str | None = jd.field(_opt_str)
    baseline_runs: int | None = jd.field(_opt_int)
    runs: tuple[TimingRun, ...] = jd.field(jd.listed(jd.nested(TimingRun)), (), dump=jd.dump_docs)

    def with_run(self, file: str, **changes: Any) -> ManifestTiming:
        """A copy with the run writing ``file`` changed (unchanged when there is none)."""
        runs = tuple(r.with_(**changes) if r.file == file else r for r in self.runs)
        return self.with_(runs=runs)


@attrs.frozen
class RunManifest(jd.JsonDoc):
    """The whole ``manifest.json`` (every field optional on reading: old and hand-made run directories)."""

    schema_version: str | None = jd.field(_opt_str)
    kind: str | None = jd.field(_opt_str)
    dsocr_version: str | None = jd.field(_opt_str)
    command: tuple[str, ...] | None = jd.field(jd.optional(_strings), dump=jd.dump_list)
    cwd: str | None = jd.field(_opt_str)
    created: str | None = jd.field(_opt_str)
    finished: str | None = jd.field(_opt_str)
    status: str | None = jd.field(_opt_str)  #: ``running``, ``complete``, ``interrupted``, ``failed``
    phase: str | None = jd.field(_opt_str)
    failure: dict[str, Any] | None = jd.field(_opt_obj)  #: ``phase`` and ``message``
    settings: ManifestSettings | None = jd.field(jd.optional(jd.nested(ManifestSettings)), dump=jd.dump_doc)
    workload: dict[str, Any] | None = jd.field(_opt_obj)
    seed: int | None = jd.field(_opt_int)
    model: str | None = jd.field(_opt_str)
    gpu: str | None = jd.field(_opt_str)
    inputs: tuple[ManifestInput, ...] | None = jd.field(
        jd.optional(jd.listed(jd.nested(ManifestInput))), dump=jd.dump_docs
    )
    environment: dict[str, Any] | None = jd.field(_opt_obj)
    nsys: dict[str, Any] | None = jd.field(_opt_obj)  #: path, version, found_via
    commands: dict[str, Any] | None = jd.field(_opt_obj)  #: profile, export, baseline, profile_env, calibrate
    phases: dict[str, Any] | None = jd.field(_opt_obj)  #: seconds per phase
    ranges: dict[str, Any] | None = jd.field(_opt_obj)  #: what the export check found
    timing: ManifestTiming | None = jd.field(jd.optional(jd.nested(ManifestTiming)), dump=jd.dump_doc)
    op_memory: dict[str, Any] | None = jd.field(_opt_obj)
    analysis: str | None = jd.field(_opt_str)  #: ``pending``, ``done``, ``skipped``, ``failed: ...``
    warnings: tuple[str, ...] | None = jd.field(jd.optional(_strings), dump=jd.dump_list)
    devices: dict[str, Any] | None = jd.field(_opt_obj)  #: data-parallel captures: the workers
    files: tuple[str, ...] | None = jd.field(jd.optional(_strings), dump=jd.dump_list)

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest.json") -> RunManifest:
        """Build from JSON data; BadInput names ``source`` and the field on a bad value."""
        return jd.parse(cls, data, jd.Where(source))

    def profile_command(self) -> tuple[str, ...] | None:
        """The nsys command line of the profiled run (``commands.profile``)."""
        prof = (self.commands or {}).get("profile")
        if not prof:
            return None
        return tuple(map(str, prof)) if isinstance(prof, list) else (str(prof),)

    def with_phase_time(self, name: str, seconds: float) -> RunManifest:
        """A copy with ``phases[name]`` set (seconds, rounded to ms)."""
        return self.with_(phases={**(self.phases or {}), name: round(seconds, 3)})

    def text(self) -> str:
        """The document as written (``indent=2``)."""
        return json.dumps(self.to_json(), indent=2, default=str) + "\n"


def read_manifest(path: Path) -> tuple[RunManifest | None, str | None]:
    """The manifest in ``path`` and None, or None and the line naming an unusable file (None when absent);
    a readable file with a bad field raises BadInput naming the file and the field."""
    data, problem = read_doc(path)
    if data is None:
        return None, problem
    return RunManifest.from_json(data, str(path)), None
