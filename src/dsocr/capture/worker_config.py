"""The capture worker's run configuration: JSON in (written by the driver), attrs inside.

The driver writes ``RUN_CONFIG.json`` and starts ``python -m dsocr.capture.worker --config
RUN_CONFIG.json`` (under ``nsys profile`` for the profiled pass, bare for the baseline). Fields
(all optional except ``pages`` and ``timing_out``):

- ``pages``: the inputs, already validated by the driver: each a page reference
  (:attr:`dsocr.capture.inputs.InputPage.ref`: an image path, ``doc.pdf#N`` for a PDF page) or
  the JSON of an :class:`~dsocr.capture.inputs.InputPage` (``InputPage.to_json()``).
- ``timing_out``: where the worker writes ``timing.json`` (docs/timing-schema.md).
- ``device``: ``cuda`` (default), ``cuda:N`` or ``cpu``. ``dtype``: ``auto`` (bf16 on CUDA,
  float32 on the CPU), ``bfloat16``, ``float16``, ``float32``.
- ``mode``: resolution mode (``tiny`` ... ``gundam-m``, default ``gundam``); ``crops``: ``auto``
  (the vendor's grid choice), ``none``, or a fixed grid ``WxH``.
- ``repeats`` (3), ``warmup`` rounds before the capture range (2), ``capture_warmup`` passes
  over all pages right after the capture range opens, untimed (1; 0: none), ``max_new_tokens``
  (32: one from prefill, N-1 decode steps), ``prompt_tokens`` (12 fixed ids unless the checkpoint
  ships a tokenizer), ``seed`` (0).
- ``model``: ``replica``, a local checkpoint directory or a hub id in the local Hugging Face cache
  (:mod:`dsocr.execution.hub`); ``trust_remote_code``: run the checkpoint's own code and
  ``generate`` (:mod:`dsocr.execution.vendor`; needs transformers 4.46.3); ``random_weights``:
  seeded random weights for a checkpoint directory without (or ignoring) its weights.
- ``attn_implementation``: the replica's decoder attention, ``eager`` (default, the vendor's math)
  or ``sdpa``; ``eager`` or ``flash_attention_2`` for the checkpoint's own code. ``moe``: the
  replica's MoE execution, ``loop`` (default, the vendor's ``moe_infer``: a host sync and
  per-expert GEMMs in every MoE layer) or ``grouped`` (grouped GEMMs, no host sync).
- ``decode``: ``eager`` (default: the dynamic cache, one step after the other), ``graph`` (a static KV
  cache and one CUDA graph of a decode step, replayed) or ``compile`` (the same step under
  ``torch.compile(mode="reduce-overhead")``); both need ``moe`` grouped, CUDA and the replica
  (:mod:`dsocr.execution.static_decode`). ``batch``: pages per forward (1), bucketed by crop grid.
- ``op_ranges``: wrap the captured work in ``emit_nvtx(record_shapes=True)`` (CUDA torch only).
- ``module_ranges``: one NVTX range per medium-granularity module (domain ``dsocr.module``).
- ``op_memory_out``: where to write ``op_memory.json`` (docs/op-memory-schema.md) from one extra
  pass after the capture range closed, under the PyTorch profiler with memory recording; None: no pass.
- ``capture_range``: ``cuda-profiler-api`` (cudaProfilerStart/Stop), ``nvtx`` (a ``capture``
  range in domain ``dsocr``, for nsys on the CPU) or ``none`` (the unprofiled baseline).
- ``shrink``: tests only: ``{"sam_layers", "clip_layers", "decoder_layers", "vocab",
  "routed_experts"}`` (layer counts, optional narrower vocabulary / fewer experts).
- ``progress``: print ``@dsocr`` progress lines on stdout (:mod:`dsocr.capture.progress`).
- Data-parallel captures (``--gpus N`` / ``--devices``, :mod:`dsocr.capture.launcher`): ``rank`` and
  ``workers`` (this worker's place among the capture's workers), ``page_indices`` (each page's index
  in the whole capture: the ``page`` payloads and timing records use it; default 0, 1, ...) and
  ``barrier`` (a directory: the workers open and close the capture range together,
  :mod:`dsocr.capture.barrier`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.atomic import write_text
from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.execution.variants import DECODE_EAGER, DECODE_MODES
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture
from dsocr.model.modes import MODES, check_grid, get_mode, parse_grid

CAPTURE_CUDA: Final = "cuda-profiler-api"
CAPTURE_NVTX: Final = "nvtx"
CAPTURE_NONE: Final = "none"
CAPTURE_RANGES: Final = (CAPTURE_CUDA, CAPTURE_NVTX, CAPTURE_NONE)
MODEL_REPLICA: Final = "replica"
DTYPES: Final = ("auto", "bfloat16", "float16", "float32")


@attrs.frozen
class Shrink:
    """Smaller layer counts (and optionally vocabulary and expert count) for fast tests."""

    sam_layers: int = 2
    clip_layers: int = 2
    decoder_layers: int = 2
    vocab: int | None = None
    routed_experts: int | None = None

    def apply(self, arch: Architecture) -> Architecture:
        """``arch`` with these sizes."""
        out = arch.shrunk(self.sam_layers, self.clip_layers, self.decoder_layers)
        dec = out.decoder
        if self.vocab is not None:
            dec = attrs.evolve(dec, vocab=self.vocab)
        if self.routed_experts is not None:
            dec = attrs.evolve(dec, routed_experts=self.routed_experts)
        return attrs.evolve(out, decoder=dec)


@attrs.frozen
class WorkerConfig:
    """Everything one worker run needs (see the module docstring for each field)."""

    pages: tuple[str | dict[str, Any], ...]
    timing_out: str
    device: str = "cuda"
    dtype: str = "auto"
    mode: str = "gundam"
    crops: str = "auto"
    repeats: int = 3
    warmup: int = 2
    capture_warmup: int = 1
    max_new_tokens: int = 32
    prompt_tokens: int = 12
    seed: int = 0
    model: str = MODEL_REPLICA
    trust_remote_code: bool = False
    random_weights: bool = False
    attn_implementation: str = "eager"
    moe: str = "loop"
    decode: str = "eager"
    batch: int = 1
    op_ranges: bool = False
    module_ranges: bool = False
    op_memory_out: str | None = None
    capture_range: str = CAPTURE_CUDA
    shrink: Shrink | None = None
    progress: bool = True
    rank: int = 0
    workers: int = 1
    page_indices: tuple[int, ...] | None = None
    barrier: str | None = None

    @property
    def is_cuda(self) -> bool:
        """Whether the run uses a CUDA device."""
        return self.device.startswith("cuda")

    def architecture(self) -> Architecture:
        """The architecture to build (shrunk when ``shrink`` is set)."""
        return self.shrink.apply(DEEPSEEK_OCR) if self.shrink else DEEPSEEK_OCR

    def validate(self) -> WorkerConfig:
        """Check every field; BadInput naming the field and the fix on the first problem."""
        if not self.pages:
            raise BadInput("worker config lists no pages: give at least one image file in 'pages'")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise BadInput(f"worker config device {self.device!r} is unknown: use cuda, cuda:N or cpu")
        if self.dtype not in DTYPES:
            raise BadInput(f"worker config dtype {self.dtype!r} is unknown: use one of {', '.join(DTYPES)}")
        get_mode(self.mode)
        if self.mode not in MODES:
            raise BadInput(f"worker config mode {self.mode!r} is not lower-case: use one of {', '.join(MODES)}")
        if self.crops not in ("auto", "none"):
            check_grid(self.mode, parse_grid(self.crops))
        for name in ("repeats", "max_new_tokens", "prompt_tokens"):
            if getattr(self, name) < 1:
                raise BadInput(f"worker config {name} is {getattr(self, name)}: it must be at least 1")
        for name in ("warmup", "capture_warmup"):
            if getattr(self, name) < 0:
                raise BadInput(f"worker config {name} is {getattr(self, name)}: it must be 0 or more")
        if self.capture_range not in CAPTURE_RANGES:
            raise BadInput(
                f"worker config capture_range {self.capture_range!r} is unknown: use one of {', '.join(CAPTURE_RANGES)}"
            )
        if self.capture_range == CAPTURE_CUDA and not self.is_cuda:
            raise BadInput(
                "capture_range cuda-profiler-api needs a CUDA device: on the CPU use capture_range nvtx "
                "(nsys --capture-range=nvtx --nvtx-capture=capture@dsocr)"
            )
        if self.trust_remote_code and self.model == MODEL_REPLICA:
            raise BadInput("trust_remote_code needs a checkpoint directory as model, not the replica")
        if self.trust_remote_code:
            from dsocr.execution.vendor import check_options

            check_options(self.mode, self.crops, self.dtype, self.attn_implementation)
            if self.shrink is not None:
                raise BadInput("shrink applies to the replica only: cut the checkpoint's config.json instead")
        elif self.attn_implementation not in ("eager", "sdpa"):
            raise BadInput(
                f"worker config attn_implementation {self.attn_implementation!r} is unknown: use eager or sdpa"
            )
        if self.moe not in ("loop", "grouped"):
            raise BadInput(f"worker config moe {self.moe!r} is unknown: use loop or grouped")
        check_variant(
            self.decode, self.batch, moe=self.moe, device=self.device, vendor=self.trust_remote_code, pages=None
        )
        if not 0 <= self.rank < self.workers:
            raise BadInput(f"worker config rank {self.rank} is not in 0..{self.workers - 1}: give 0 <= rank < workers")
        if self.page_indices is not None and len(self.page_indices) != len(self.pages):
            raise BadInput(
                f"worker config has {len(self.page_indices)} page_indices for {len(self.pages)} pages: "
                "give one per page"
            )
        return self

    def page_index(self, i: int) -> int:
        """The capture-wide index of this worker's ``i``-th page."""
        return self.page_indices[i] if self.page_indices is not None else i

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = attrs.asdict(self, recurse=True)
        data["pages"] = list(self.pages)
        if self.page_indices is not None:
            data["page_indices"] = list(self.page_indices)
        return data

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def write(self, path: Path) -> None:
        """Write the config atomically to ``path``."""
        write_text(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "worker config") -> WorkerConfig:
        """Build and validate a config; BadInput names unknown or ill-typed fields."""
        if not isinstance(data, dict):
            raise BadInput(f"{source} is not a JSON object: write the fields as one object")
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(
                f"{source} has unknown fields {', '.join(unknown)}: known fields are {', '.join(sorted(known))}"
            )
        missing = [k for k in ("pages", "timing_out") if k not in data]
        if missing:
            raise BadInput(f"{source} lacks {', '.join(missing)}: give the page files and the timing.json path")
        values = dict(data)
        try:
            if isinstance(data["pages"], (str, dict)):
                raise TypeError("pages must be a list")
            values["pages"] = tuple(p if isinstance(p, dict) else str(p) for p in data["pages"])
            if data.get("page_indices") is not None:
                values["page_indices"] = tuple(int(i) for i in data["page_indices"])
            if data.get("shrink") is not None:
                values["shrink"] = Shrink(**data["shrink"])
            cfg = cls(**values)
        except TypeError as exc:
            raise BadInput(
                f"{source} has a field of the wrong shape ({exc}): see docs in dsocr.capture.worker_config"
            ) from None
        _check_types(cfg, source)
        return cfg.validate()

    @classmethod
    def read(cls, path: Path) -> WorkerConfig:
        """Read and validate a config file."""
        if not path.is_file():
            raise InputNotFound(f"worker config {path} does not exist: pass the RUN_CONFIG.json the driver wrote")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"worker config {path} is not valid JSON ({exc}): rewrite it with the driver") from None
        return cls.from_dict(data, source=f"worker config {path}")


def _check_types(cfg: WorkerConfig, source: str) -> None:
    expected: dict[str, type | tuple[type, ...]] = {
        "timing_out": str,
        "device": str,
        "dtype": str,
        "mode": str,
        "crops": str,
        "repeats": int,
        "warmup": int,
        "capture_warmup": int,
        "max_new_tokens": int,
        "prompt_tokens": int,
        "seed": int,
        "model": str,
        "trust_remote_code": bool,
        "random_weights": bool,
        "attn_implementation": str,
        "moe": str,
        "decode": str,
        "batch": int,
        "op_ranges": bool,
        "module_ranges": bool,
        "capture_range": str,
        "op_memory_out": (str, type(None)),
        "progress": bool,
        "rank": int,
        "workers": int,
    }
    for name, kind in expected.items():
        value = getattr(cfg, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadInput(f"{source}: field {name} is {value!r}, expected {getattr(kind, '__name__', kind)}")


def check_variant(decode: str, batch: int, *, moe: str, device: str, vendor: bool, pages: int | None) -> None:
    """BadInput in one line for an impossible variant: an unknown or uncapturable decode, a batch below 1,
    a batch with the checkpoint's own code, a batch larger than the ``pages`` given (when known)."""
    if decode not in DECODE_MODES:
        raise BadInput(f"decode {decode!r} is unknown: use one of {', '.join(DECODE_MODES)}")
    if decode != DECODE_EAGER:
        from dsocr.execution.variants import check_decode

        check_decode(decode, moe=moe, device=device, vendor=vendor)
    if batch < 1:
        raise BadInput(f"batch {batch} is out of range: give at least 1 page per forward")
    if batch > 1 and vendor:
        raise BadInput(
            f"--batch {batch} needs dsocr's replica: the checkpoint's own generate runs one page at a time; "
            "drop --trust-remote-code or use --batch 1"
        )
    if pages is not None and batch > pages:
        raise BadInput(
            f"--batch {batch} is larger than the {pages} page(s) given: use --batch {pages} or fewer, or give more "
            "pages (a page file given several times to --pages counts each time)"
        )
