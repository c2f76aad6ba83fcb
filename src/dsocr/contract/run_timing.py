"""``timing.json`` and ``timing-baseline*.json``: the capture worker's own measurements, typed (docs/timing-schema.md).

One schema for the profiled run (``timing.json``) and the unprofiled runs (``timing-baseline.json``,
``timing-baseline-<k>.json``). Written by ``dsocr.capture.worker`` (:meth:`RunTiming.write`), read by
``dsocr analyze`` once per run directory (:func:`read_timing`). In ``analysis.json`` the same document
carries ``records_compacted`` (decode steps summed, ``steps`` per record), ``file`` and ``other_runs``
(the other unprofiled runs). Every reader gets these classes, never the JSON dicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract import jsondoc as jd
from dsocr.contract.atomic import write_text
from dsocr.contract.errors import BadInput
from dsocr.contract.rundocs import read_doc

SCHEMA: Final = "dsocr.timing"
SCHEMA_VERSION: Final = "1.0"
CLOCK_CUDA: Final = "cuda-event"
CLOCK_CPU: Final = "perf-counter"

#: Columns of one record in ``records`` (docs/timing-schema.md), in order.
RECORD_FIELDS: Final = (
    "repeat",
    "page",
    "stage",
    "index",
    "ms",
    "tokens",
    "prefill_length",
    "context_length",
    "peak_allocated_bytes",
    "batch",  # pages the forward held (``--batch``); absent (None) in the repeat record
)

#: ``model.execution.decode``: how decode steps run.
DECODE_MODES: Final = ("eager", "graph", "compile")

_opt_str = jd.optional(jd.string)
_opt_int = jd.optional(jd.integer)
_opt_num = jd.optional(jd.number)
_opt_bool = jd.optional(jd.boolean)
_opt_obj = jd.optional(jd.obj)
_strings = jd.listed(jd.string)
_ints = jd.listed(jd.integer)


def _decode(value: Any, where: jd.Where) -> str:
    if value not in DECODE_MODES:
        raise where.bad(value, " or ".join(DECODE_MODES))
    return str(value)


def _cache(value: Any, where: jd.Where) -> str:
    text = jd.string(value, where)
    head, _, size = text.partition(":")
    if text == "dynamic" or (head == "static" and size.isdigit() and int(size) > 0):
        return text
    raise where.bad(value, "'dynamic' or 'static:N'")


@attrs.frozen
class Execution(jd.JsonDoc):
    """How the replica executed (``model.execution``); the vendor's code has none (``model.vendor_execution``)."""

    moe: str | None = jd.field(_opt_str)  #: ``loop`` or ``grouped``
    attn: str | None = jd.field(_opt_str)  #: decoder attention: ``eager`` or ``sdpa``
    autocast: str | None = jd.field(_opt_str)  #: ``bfloat16`` or ``none``
    prefill_logits: str | None = jd.field(_opt_str)  #: ``all`` or ``last`` (lm_head positions in prefill)
    decode: str = jd.field(_decode, "eager")  #: decode steps: ``eager``, ``graph`` (CUDA graphs) or ``compile``
    batch: int = jd.field(jd.integer, 1)  #: pages decoded together
    batching: str | None = jd.field(_opt_str)  #: how pages were batched (None: one at a time)
    dtype: str | None = jd.field(_opt_str)  #: the weights' dtype as run
    cache: str = jd.field(_cache, "dynamic")  #: KV cache: ``dynamic`` or ``static:N`` (N positions)

    def variant(self, attention: str | None = None) -> tuple[tuple[str, str], ...]:
        """The execution variant that names a run in every report: (label, value) of MoE, decoder attention
        (``attention`` where the record has none), decode, batch and KV cache."""
        attn = self.attn or attention
        return (
            *((("MoE", self.moe),) if self.moe else ()),
            *((("attention", attn),) if attn else ()),
            ("decode", self.decode),
            ("batch", str(self.batch)),
            ("cache", self.cache),
        )


def _execution(value: Any, where: jd.Where) -> Execution | str | None:
    """The replica's record; older captures of the vendor's code held its description here, as a string."""
    return value if value is None or isinstance(value, str) else jd.parse(Execution, value, where)


def _dump_execution(value: Execution | str | None) -> Any:
    return value.to_json() if isinstance(value, Execution) else value


@attrs.frozen
class TimingModel(jd.JsonDoc):
    """``model``: what ran (runs before issue 10 have ``experts_implementation``, kept in ``extra``)."""

    kind: str | None = jd.field(_opt_str)  #: ``replica``, ``checkpoint``, ``remote-code``
    source: str | None = jd.field(_opt_str)
    directory: str | None = jd.field(_opt_str)
    revision: str | None = jd.field(_opt_str)
    random_weights: bool | None = jd.field(_opt_bool)
    weights: str | None = jd.field(_opt_str)
    code: str | None = jd.field(_opt_str)
    architecture: str | None = jd.field(_opt_str)
    parameters: int | None = jd.field(_opt_int)
    #: the replica's execution record (a string: the vendor's description, in captures before ``vendor_execution``)
    execution: Execution | str | None = jd.field(_execution, dump=_dump_execution)
    attn_implementation: str | None = jd.field(_opt_str)
    vendor_execution: str | None = jd.field(_opt_str)  #: the vendor's generate, in words
    module_ranges: tuple[str, ...] = jd.field(_strings, (), dump=jd.dump_list)

    @property
    def replica_execution(self) -> Execution | None:
        """The replica's execution record (None for the vendor's code and captures before issue 10)."""
        return self.execution if isinstance(self.execution, Execution) else None

    @property
    def vendor_text(self) -> str | None:
        """How the vendor's code ran, in words (None for the replica)."""
        return self.vendor_execution or (self.execution if isinstance(self.execution, str) else None)

    @property
    def experts_implementation(self) -> str | None:
        """transformers' MoE kernel choice (captures before issue 10)."""
        value = self.extra.get("experts_implementation")
        return str(value) if value is not None else None


@attrs.frozen
class Prompt(jd.JsonDoc):
    """``prompt``: the text token ids around the image embeddings."""

    source: str | None = jd.field(_opt_str)  #: ``fixed-ids`` or ``tokenizer``
    tokens: int | None = jd.field(_opt_int)
    ids_before: tuple[int, ...] = jd.field(_ints, (), dump=jd.dump_list)
    ids_after: tuple[int, ...] = jd.field(_ints, (), dump=jd.dump_list)
    eos_token_id: int | None = jd.field(_opt_int)


def _grid(value: Any, where: jd.Where) -> tuple[int, int] | None:
    if value is None:
        return None
    got = _ints(value, where)
    if len(got) != 2:
        raise where.bad(value, "[w, h]")
    return got[0], got[1]


@attrs.frozen
class TimingPage(jd.JsonDoc):
    """One page of the pass (``pages``), in run order."""

    index: int | None = jd.field(_opt_int)
    name: str | None = jd.field(_opt_str)
    path: str | None = jd.field(_opt_str)
    width: int | None = jd.field(_opt_int)
    height: int | None = jd.field(_opt_int)
    grid: tuple[int, int] | None = jd.field(_grid, dump=jd.dump_list)  #: [w, h] crops; [1, 1]: none
    crops: int | None = jd.field(_opt_int)
    image_tokens: int | None = jd.field(_opt_int)
    vision_tokens: int | None = jd.field(_opt_int)
    prefill_length: int | None = jd.field(_opt_int)
    forward: int | None = jd.field(_opt_int)  #: ``--batch``: the forward (0, 1, ...) that held this page
    cache_length: int | None = jd.field(_opt_int)  #: static-cache decode: positions of this page's cache


@attrs.frozen
class TimingRecord(jd.JsonDoc):
    """One stage instance (``records``); ``steps`` only in analysis.json's compacted decode-step sums."""

    repeat: int | None = jd.field(_opt_int)
    page: int | None = jd.field(_opt_int)
    stage: str | None = jd.field(_opt_str)
    index: int | None = jd.field(_opt_int)
    ms: float | None = jd.field(_opt_num)
    tokens: int | None = jd.field(_opt_int)
    prefill_length: int | None = jd.field(_opt_int)
    context_length: int | None = jd.field(_opt_int)
    peak_allocated_bytes: int | None = jd.field(_opt_int)
    batch: int | None = jd.field(_opt_int)  #: pages decoded together (batched decode only)
    steps: int | None = jd.field(_opt_int)  #: decode steps summed into this record (analysis.json)


def _schema(value: Any, where: jd.Where) -> str:
    text = jd.string(value, where)
    if not text.startswith(SCHEMA):
        raise BadInput(f"{where.file}: schema {text!r} is not {SCHEMA}: give a dsocr timing document")
    return text


def _version(value: Any, where: jd.Where) -> str:
    text = jd.string(value, where)
    if text.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise BadInput(
            f"{where.file}: version {text!r}, this dsocr reads {SCHEMA} {SCHEMA_VERSION}: use a matching dsocr"
        )
    return text


def _timings(value: Any, where: jd.Where) -> tuple[RunTiming, ...]:
    return jd.listed(jd.nested(RunTiming))(value, where)


@attrs.frozen
class RunTiming(jd.JsonDoc):
    """One ``timing*.json`` document (every field optional on reading: old and hand-made run directories)."""

    schema: str | None = jd.field(jd.optional(_schema))
    version: str | None = jd.field(jd.optional(_version))
    clock: str | None = jd.field(_opt_str)  #: ``cuda-event`` or ``perf-counter``
    profiled: bool | None = jd.field(_opt_bool)  #: false for an unprofiled (baseline) run
    capture_range: str | None = jd.field(_opt_str)
    interrupted: bool | None = jd.field(_opt_bool)
    config: dict[str, Any] | None = jd.field(_opt_obj)  #: the worker config as run (capture.worker_config)
    environment: dict[str, Any] | None = jd.field(_opt_obj)
    model: TimingModel | None = jd.field(jd.optional(jd.nested(TimingModel)), dump=jd.dump_doc)
    prompt: Prompt | None = jd.field(jd.optional(jd.nested(Prompt)), dump=jd.dump_doc)
    pages: tuple[TimingPage, ...] = jd.field(jd.listed(jd.nested(TimingPage)), (), dump=jd.dump_docs)
    setup: dict[str, Any] | None = jd.field(_opt_obj)  #: seconds outside the stages
    assumptions: tuple[str, ...] = jd.field(_strings, (), dump=jd.dump_list)
    record_fields: tuple[str, ...] = jd.field(_strings, (), dump=jd.dump_list)
    records: tuple[TimingRecord, ...] = jd.field(jd.listed(jd.nested(TimingRecord)), (), dump=jd.dump_docs)
    workers: tuple[dict[str, Any], ...] | None = jd.field(jd.optional(jd.listed(jd.obj)), dump=jd.dump_list)
    #: analysis.json only: decode steps summed per (repeat, page) beyond the first ones
    records_compacted: bool | None = jd.field(_opt_bool)
    file: str | None = jd.field(_opt_str)  #: analysis.json only: the file of one of ``other_runs``
    #: analysis.json only: the run directory's other unprofiled runs (``timing-baseline-<k>.json``)
    other_runs: tuple[RunTiming, ...] = jd.field(_timings, (), dump=jd.dump_docs)

    @classmethod
    def from_json(cls, data: Any, source: str = "timing.json") -> RunTiming:
        """Build from JSON data; BadInput names ``source`` and the field on a bad value."""
        return jd.parse(cls, data, jd.Where(source))

    def config_value(self, key: str) -> Any:
        """One field of the worker config as run (None when absent)."""
        return (self.config or {}).get(key)

    @property
    def execution(self) -> Execution | None:
        """The replica's execution record (None: the vendor's code, or a run before issue 10)."""
        return self.model.replica_execution if self.model is not None else None

    def text(self) -> str:
        """The document as written (``indent=1``)."""
        return json.dumps(self.to_json(), indent=1) + "\n"

    def write(self, path: Path) -> None:
        """Write atomically."""
        write_text(path, self.text())


def read_timing(path: Path) -> tuple[RunTiming | None, str | None]:
    """The document in ``path`` and None, or None and the line naming an unusable file (None when absent);
    a readable file with a bad field raises BadInput naming the file and the field."""
    data, problem = read_doc(path)
    if data is None:
        return None, problem
    return RunTiming.from_json(data, str(path)), None
