"""Time every kernel signature alone: the calibration behind the analytic model's calibrated prediction.

:func:`measure` runs each distinct :class:`~dsocr.analytic.signature.Kernel` with the replica's own
PyTorch operators at its exact shape (:mod:`dsocr.capture.calibrate_ops`): inputs allocated once
(seeded), ``warmup`` untimed runs, then ``iterations`` runs each timed alone. On CUDA every run is
bracketed by two CUDA events, with the L2 cache flushed before it (a buffer of at least twice the
L2 written outside the events) and a short GPU spin after the flush so the host has queued the
whole primitive before the GPU reaches the start event: the time is the GPU's, not the launch
latency's. On the CPU the same loop uses ``time.perf_counter_ns``. A signature that fails (out of
memory, a shape the operators refuse) is recorded with its error and the others go on.

:func:`calibration_document` gives the ``calibration.json`` document (docs/calibration-schema.md).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

import attrs

from dsocr.capture import calibrate_ops
from dsocr.contract.errors import BadInput
from dsocr.model.architecture import Architecture, ClipConfig, DecoderConfig, ProjectorConfig, SamConfig

if TYPE_CHECKING:
    import torch

    from dsocr.analytic.signature import Kernel

SCHEMA: Final = "dsocr.calibration"
VERSION: Final = 1
DEFAULT_ITERATIONS: Final = 20
DEFAULT_WARMUP: Final = 3
#: L2 flush buffer on CUDA: at least this, and at least twice the GPU's L2.
CUDA_FLUSH_BYTES: Final = 256 << 20
#: Flush buffer on the CPU (larger than a last-level cache; the CPU is for tests and smoke runs).
CPU_FLUSH_BYTES: Final = 32 << 20
#: GPU spin after the flush: at least this long, and twice the host time to queue the primitive.
MIN_LEAD_US: Final = 50.0
#: ``dsocr calibrate --smoke``: DeepSeek-OCR's structure (windows, global layers, dense + MoE decoder
#: layers, GQA-free heads) at narrow widths, two layers, a small vocabulary and 8 experts.
SMOKE_ARCH: Final = Architecture(
    sam=SamConfig(
        hidden=32, layers=2, heads=2, mlp=64, global_layers=(1,), neck_channels=16, compressor_channels=(16, 32)
    ),
    clip=ClipConfig(hidden=32, layers=1, heads=2, mlp=64),
    projector=ProjectorConfig(in_features=64, out_features=32),
    decoder=DecoderConfig(
        vocab=512,
        hidden=32,
        layers=2,
        heads=2,
        kv_heads=2,
        head_dim=16,
        dense_intermediate=64,
        routed_experts=8,
        experts_per_token=2,
        moe_intermediate=16,
        shared_experts=1,
    ),
    name="smoke (narrow 2-layer DeepSeek-OCR)",
)
#: The dtype names of the file (torch's dtype -> short name).
DTYPE_NAMES: Final = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}


@attrs.frozen
class Measured:
    """One signature's times over the iterations (ns), or the error that stopped it."""

    kernel: Kernel
    median_ns: int | None
    min_ns: int | None
    max_ns: int | None
    iterations: int  #: timed runs that completed
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry of ``kernels`` in calibration.json."""
        return {
            "key": self.kernel.key,
            "kind": self.kernel.kind,
            "params": self.kernel.as_dict(),
            "median_ns": self.median_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "iterations": self.iterations,
            "error": self.error,
        }


@attrs.frozen
class Method:
    """How the times were taken (the ``method`` object of calibration.json)."""

    iterations: int
    warmup: int
    l2_flush_bytes: int
    timer: str  #: ``cuda_event`` or ``perf_counter_ns``

    def to_json(self) -> dict[str, Any]:
        """JSON data."""
        return attrs.asdict(self)


#: Called before each signature is measured (index, kernel) and after it (index, result).
OnStart = Callable[[int, "Kernel"], None]
OnDone = Callable[[int, Measured], None]


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _free(device: torch.device) -> None:
    """Give a signature's tensors back (on the CPU reference counting does it; a full GC costs ~0.1 s)."""
    if device.type == "cuda":
        import torch

        gc.collect()
        torch.cuda.empty_cache()


class _CudaTimer:
    """CUDA events around each run; the flush and a spin outside them."""

    name = "cuda_event"

    def __init__(self, device: torch.device, flush_bytes: int) -> None:
        import torch

        self.torch = torch
        self.device = device
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
        self.flush_bytes = max(flush_bytes, 2 * l2)
        self.flush = torch.empty(self.flush_bytes // 4, dtype=torch.int32, device=device)
        self.cycles_per_us = self._spin_rate()

    def _spin_rate(self) -> float:
        """GPU clock cycles per microsecond of ``torch.cuda._sleep`` (measured once)."""
        torch = self.torch
        cycles = 2_000_000
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(cycles)  # warm
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return float(cycles / max(start.elapsed_time(end) * 1000.0, 1e-3))

    def run(self, fn: calibrate_ops.Runner, iterations: int, warmup: int) -> list[int]:
        torch = self.torch
        host_ns = []
        for _ in range(warmup):
            t0 = time.perf_counter_ns()
            fn()
            host_ns.append(time.perf_counter_ns() - t0)
            torch.cuda.synchronize(self.device)
        lead_us = max(MIN_LEAD_US, 2.0 * (min(host_ns) if host_ns else 0) / 1000.0)
        spin = int(lead_us * self.cycles_per_us)
        pairs = []
        for _ in range(iterations):
            self.flush.fill_(1)
            torch.cuda._sleep(spin)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(self.device)
        return [round(s.elapsed_time(e) * 1e6) for s, e in pairs]


class _CpuTimer:
    """``time.perf_counter_ns`` around each run; the flush buffer written before it."""

    name = "perf_counter_ns"

    def __init__(self, flush_bytes: int) -> None:
        import torch

        self.flush_bytes = flush_bytes
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.int32) if flush_bytes else None

    def run(self, fn: calibrate_ops.Runner, iterations: int, warmup: int) -> list[int]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iterations):
            if self.flush is not None:
                self.flush.fill_(1)
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        return times


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available), ``cuda``, ``cuda:N`` or ``cpu`` as a torch device."""
    import torch

    from dsocr.contract.errors import EnvironmentProblem

    d = device.strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu or auto")
    return torch.device(d)


def measure(
    kernels: Sequence[Kernel],
    *,
    device: str | torch.device = "cpu",
    dtype: Any = None,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
    l2_flush_bytes: int | None = None,
    seed: int = 0,
    on_start: OnStart | None = None,
    on_done: OnDone | None = None,
) -> tuple[list[Measured], Method]:
    """Time each distinct signature alone on ``device`` in ``dtype`` (default bf16 on CUDA, fp32 on CPU).

    Returns one :class:`Measured` per distinct key (first-seen order) and the method used. A kind
    without a builder raises BadInput before anything runs; a signature that fails is recorded.
    """
    import torch

    from dsocr.model.replica import resolve_dtype

    if iterations < 1 or warmup < 0:
        raise BadInput(f"iterations = {iterations}, warmup = {warmup}: give at least 1 iteration and 0 warm-up runs")
    seen: dict[str, Kernel] = {}
    for k in kernels:
        seen.setdefault(k.key, k)
    unique = list(seen.values())
    calibrate_ops.check_kinds(unique)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(str(dev), dtype)
    timer: _CudaTimer | _CpuTimer
    if dev.type == "cuda":
        timer = _CudaTimer(dev, CUDA_FLUSH_BYTES if l2_flush_bytes is None else l2_flush_bytes)
    else:
        timer = _CpuTimer(CPU_FLUSH_BYTES if l2_flush_bytes is None else l2_flush_bytes)
    results: list[Measured] = []
    for i, kernel in enumerate(unique):
        if on_start is not None:
            on_start(i, kernel)
        result = _measure_one(kernel, timer, dev, torch_dtype, iterations, warmup, seed)
        results.append(result)
        if on_done is not None:
            on_done(i, result)
    method = Method(iterations, warmup, timer.flush_bytes, timer.name)
    del timer
    _free(dev)
    return results, method


def _measure_one(
    kernel: Kernel,
    timer: _CudaTimer | _CpuTimer,
    device: torch.device,
    dtype: torch.dtype,
    iterations: int,
    warmup: int,
    seed: int,
) -> Measured:
    import torch

    fn: calibrate_ops.Runner | None = None
    try:
        torch.manual_seed(seed)
        with torch.inference_mode():
            with device:  # modules are built (and initialized) on the device, not copied there
                fn = calibrate_ops.build(kernel, device, dtype)
            times = timer.run(fn, iterations, warmup)
        return Measured(kernel, round(statistics.median(times)), min(times), max(times), len(times))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # OOM, a shape the operators refuse: record it, go on
        return Measured(kernel, None, None, None, 0, _error_line(exc))
    finally:
        del fn
        _free(device)


def device_name(device: torch.device) -> str:
    """The CUDA device name (``NVIDIA H100 80GB HBM3``) or ``cpu``."""
    if device.type != "cuda":
        return "cpu"
    import torch

    return str(torch.cuda.get_device_name(device))


def dtype_name(dtype: Any) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for a torch dtype."""
    return DTYPE_NAMES.get(str(dtype), str(dtype).removeprefix("torch."))


def calibration_document(
    results: Sequence[Measured],
    method: Method,
    *,
    device: torch.device,
    dtype: Any,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The calibration.json document (docs/calibration-schema.md); ``extra`` adds top-level fields."""
    import torch
    import transformers

    return {
        "schema": SCHEMA,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": device_name(device),
        "device": device.type,
        "dtype": dtype_name(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "method": method.to_json(),
        **(extra or {}),
        "kernels": [r.to_json() for r in results],
    }
