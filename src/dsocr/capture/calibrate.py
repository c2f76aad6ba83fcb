"""Time every kernel signature alone: the calibration behind the analytic model's calibrated prediction.

:func:`measure` runs each distinct :class:`~dsocr.analytic.signature.Kernel` with the replica's own
PyTorch operators at its exact shape (:mod:`dsocr.capture.calibrate_ops`): inputs allocated once
(seeded), ``warmup`` untimed runs, then ``iterations`` runs each timed alone. On CUDA the time of a
run is the sum of the durations of the kernels it launched, as CUPTI (``torch.profiler``) records
them, the same clock Nsight Systems' kernel records use, so it compares with a stage's GPU busy
time (no launch gaps between the kernels of a primitive): first ``iterations`` runs with the L2
cache flushed before each (a buffer of at least twice the L2 written outside the run; weights and
inputs cold: ``median_ns``), then ``iterations`` runs back to back without a flush (whatever fits
in L2 stays there: ``warm_median_ns``). In the model a kernel's inputs were usually just written by
the previous kernel while its weights come from memory, so the two bracket it. On the CPU the same
loop uses ``time.perf_counter_ns`` (no warm figure). A signature that fails (out of
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
from dsocr.contract.run_calibration import SCHEMA, VERSION, CalibrationKernel, RunCalibration
from dsocr.model.architecture import Architecture, ClipConfig, DecoderConfig, ProjectorConfig, SamConfig

if TYPE_CHECKING:
    import torch

    from dsocr.analytic.signature import Kernel

DEFAULT_ITERATIONS: Final = 20
DEFAULT_WARMUP: Final = 3
#: L2 flush buffer on CUDA: at least this, and at least twice the GPU's L2.
CUDA_FLUSH_BYTES: Final = 256 << 20
#: Flush buffer on the CPU (larger than a last-level cache; the CPU is for tests and smoke runs).
CPU_FLUSH_BYTES: Final = 32 << 20
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
    warm_median_ns: int | None = None  #: median over runs without an L2 flush (CUDA only)

    def to_json(self) -> dict[str, Any]:
        """The entry of ``kernels`` in calibration.json."""
        return {
            "key": self.kernel.key,
            "kind": self.kernel.kind,
            "params": self.kernel.as_dict(),
            "median_ns": self.median_ns,
            "min_ns": self.min_ns,
            "max_ns": self.max_ns,
            "warm_median_ns": self.warm_median_ns,
            "iterations": self.iterations,
            "error": self.error,
        }


@attrs.frozen
class Method:
    """How the times were taken (the ``method`` object of calibration.json)."""

    iterations: int
    warmup: int
    l2_flush_bytes: int
    timer: str  #: ``cupti_kernel_sum`` (CUDA) or ``perf_counter_ns`` (CPU)

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


#: The name of the range each timed run is wrapped in (its kernels are summed per range).
RUN_RANGE: Final = "dsocr.calibrate.run"


def kernel_sums_ns(events: Sequence[Any], name: str = RUN_RANGE) -> list[int]:
    """Per run: the summed duration of the kernels launched inside each ``name`` range (ns).

    ``events`` are ``torch.profiler`` FunctionEvents; a host range's ``device_time_total`` (µs, also
    called ``cuda_time_total`` in older torch) covers the kernels of every op inside it.
    """
    out = []
    for e in events:
        # the range appears twice: the host op (whose total covers its kernels) and, in newer torch,
        # a GPU-side user annotation of the same name; keep the host one
        if e.name != name or "CUDA" in str(getattr(e, "device_type", "CPU")):
            continue
        us = getattr(e, "device_time_total", None)
        if us is None:
            us = e.cuda_time_total
        out.append(round(float(us) * 1000.0))
    return out


class _CudaTimer:
    """Kernel durations from CUPTI (``torch.profiler``) per run: L2 flushed before each, then warm."""

    name = "cupti_kernel_sum"

    def __init__(self, device: torch.device, flush_bytes: int) -> None:
        import torch

        self.torch = torch
        self.device = device
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
        self.flush_bytes = max(flush_bytes, 2 * l2)
        self.flush = torch.empty(self.flush_bytes // 4, dtype=torch.int32, device=device)

    def _profile(self, fn: calibrate_ops.Runner, iterations: int, flush: bool) -> list[int]:
        torch = self.torch
        from torch.profiler import ProfilerActivity, profile, record_function

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(iterations):
                if flush:
                    self.flush.fill_(1)
                with record_function(RUN_RANGE):
                    fn()
            torch.cuda.synchronize(self.device)
        times = kernel_sums_ns(prof.events())
        if len(times) != iterations or not all(t > 0 for t in times):
            raise RuntimeError(f"the profiler recorded {len(times)} runs with kernels of {iterations}")
        return times

    def run(self, fn: calibrate_ops.Runner, iterations: int, warmup: int) -> list[int]:
        for _ in range(warmup):
            fn()
        self.torch.cuda.synchronize(self.device)
        return self._profile(fn, iterations, flush=True)

    def run_warm(self, fn: calibrate_ops.Runner, iterations: int) -> list[int]:
        """The same runs back to back without a flush."""
        return self._profile(fn, iterations, flush=False)


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
    moe: str = "loop",
) -> tuple[list[Measured], Method]:
    """Time each distinct signature alone on ``device`` in ``dtype`` (default bf16 on CUDA, fp32 on CPU).

    Returns one :class:`Measured` per distinct key (first-seen order) and the method used. A kind
    without a builder raises BadInput before anything runs; a signature that fails is recorded.
    ``moe`` is the replica's MoE execution the routed experts are timed in (``loop`` or ``grouped``).
    """
    import torch

    from dsocr.execution.replica import resolve_dtype

    if iterations < 1 or warmup < 0:
        raise BadInput(f"iterations = {iterations}, warmup = {warmup}: give at least 1 iteration and 0 warm-up runs")
    if moe not in calibrate_ops.MOE_EXECUTIONS:
        raise BadInput(f"moe {moe!r} is unknown: use one of {', '.join(calibrate_ops.MOE_EXECUTIONS)}")
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
        result = _measure_one(kernel, timer, dev, torch_dtype, iterations, warmup, seed, moe)
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
    moe: str = "loop",
) -> Measured:
    import torch

    fn: calibrate_ops.Runner | None = None
    try:
        torch.manual_seed(seed)
        with torch.inference_mode():
            with device:  # modules are built (and initialized) on the device, not copied there
                fn = calibrate_ops.build(kernel, device, dtype, moe)
            times = timer.run(fn, iterations, warmup)
            warm = timer.run_warm(fn, iterations) if isinstance(timer, _CudaTimer) else None
        return Measured(
            kernel,
            round(statistics.median(times)),
            min(times),
            max(times),
            len(times),
            warm_median_ns=round(statistics.median(warm)) if warm else None,
        )
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
) -> RunCalibration:
    """The calibration.json document (docs/calibration-schema.md); ``extra`` adds top-level fields (kept in the
    document's ``extra``, written between ``method`` and ``kernels``)."""
    import torch

    from dsocr.capture.manifest import package_version

    head = ("schema", "version", "created", "gpu", "device", "dtype", "torch", "transformers", "method")
    return RunCalibration(
        schema=SCHEMA,
        version=VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        gpu=device_name(device),
        device=device.type,
        dtype=dtype_name(dtype),
        torch=torch.__version__,
        transformers=package_version("transformers"),  # None: not installed (the replica needs none)
        method=method.to_json(),
        kernels=tuple(CalibrationKernel.from_json(r.to_json(), "calibration.json") for r in results),
        keys=(*head, *(extra or {}), "kernels"),
        extra=dict(extra or {}),
    )
