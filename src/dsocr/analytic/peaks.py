"""GPU peak figures (dense BF16 tensor FLOP/s, memory bandwidth) for MFU and MBU.

The table is docs/gpu-peaks.md (kept equal to GPU_TABLE by a test). Names are matched as
CUDA/NVML report them (``NVIDIA H100 80GB HBM3``, ``NVIDIA A100-SXM4-40GB``, ``NVIDIA GeForce
RTX 4090``) by model, form factor and memory size. A user-supplied figure always wins; for a
GPU not in the table a peak can be derived from SMs x clock x dense FLOPs per clock per SM
(labelled as derived: a trace's clock is the maximum SM clock, which overstates the peak by
about 8%), and the bandwidth taken from the trace. The result names the figures used and
where each came from.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from dsocr.contract.errors import BadInput


@attrs.frozen
class GpuSpec:
    """One row of the peak table."""

    name: str  #: e.g. ``H100 SXM5 80GB``
    tflops: float  #: dense BF16 tensor TFLOP/s
    tbps: float  #: memory bandwidth, TB/s
    sms: int
    family: str  #: model token matched in the name (``h100``)
    form: str | None = None  #: ``sxm``, ``pcie``, ``nvl`` when the family has several
    memory_gb: int | None = None


GPU_TABLE: Final[tuple[GpuSpec, ...]] = (
    GpuSpec("H100 SXM5 80GB", 989.4, 3.35, 132, "h100", "sxm", 80),
    GpuSpec("H100 PCIe 80GB", 756.0, 2.0, 114, "h100", "pcie", 80),
    GpuSpec("H100 NVL 94GB", 835.0, 3.9, 132, "h100", "nvl", 94),
    GpuSpec("H200 141GB", 989.4, 4.8, 132, "h200", None, 141),
    GpuSpec("A100 SXM4 80GB", 312.0, 2.039, 108, "a100", "sxm", 80),
    GpuSpec("A100 40GB", 312.0, 1.555, 108, "a100", None, 40),
    GpuSpec("L40S", 362.0, 0.864, 142, "l40s", None, 48),
    GpuSpec("L4", 121.0, 0.300, 58, "l4", None, 24),
    GpuSpec("RTX 4090", 165.2, 1.008, 128, "rtx 4090", None, 24),
    GpuSpec("RTX 5090", 209.5, 1.792, 170, "rtx 5090", None, 32),
    GpuSpec("B200", 2250.0, 8.0, 148, "b200", None, None),
)

#: Dense BF16 tensor FLOPs per clock per SM by compute capability (derivation for unknown GPUs).
FLOPS_PER_CLOCK_PER_SM: Final[dict[tuple[int, int], int]] = {(9, 0): 4096, (8, 0): 2048}

_FAMILY_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("h100", r"\bh100\b"),
    ("h200", r"\bh200\b"),
    ("a100", r"\ba100\b"),
    ("l40s", r"\bl40s\b"),
    ("l4", r"\bl4\b"),
    ("rtx 4090", r"\b4090\b"),
    ("rtx 5090", r"\b5090\b"),
    ("b200", r"\bb200\b"),
)


@attrs.frozen
class Peak:
    """The peak figures a metric uses and where each came from."""

    tflops: float | None  #: dense tensor TFLOP/s
    tbps: float | None  #: memory TB/s
    tflops_source: str  #: ``table: H100 SXM5 80GB``, ``user``, ``derived: ...`` or ``unknown``
    tbps_source: str
    gpu_name: str | None = None
    entry: str | None = None  #: the table row matched, if any
    notes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether both figures are known."""
        return self.tflops is not None and self.tbps is not None

    @property
    def flops_per_s(self) -> float | None:
        """Peak FLOP/s."""
        return self.tflops * 1e12 if self.tflops is not None else None

    @property
    def bytes_per_s(self) -> float | None:
        """Peak bytes/s."""
        return self.tbps * 1e12 if self.tbps is not None else None

    @property
    def source(self) -> str:
        """One line naming both sources."""
        if self.tflops_source == self.tbps_source:
            return self.tflops_source
        return f"FLOP/s {self.tflops_source}; bandwidth {self.tbps_source}"


def _normalize(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_/,()]", " ", name.lower())).strip()


def match_gpu(name: str) -> tuple[GpuSpec | None, tuple[str, ...]]:
    """The table row for a GPU name as CUDA reports it, and notes on any assumption made."""
    n = _normalize(name)
    family = next((f for f, pat in _FAMILY_PATTERNS if re.search(pat, n)), None)
    if family is None:
        return None, ()
    rows = [g for g in GPU_TABLE if g.family == family]
    mem = re.search(r"\b(\d{2,3}) ?gb\b", n)
    memory = int(mem.group(1)) if mem else None
    form = (
        "pcie" if "pcie" in n else "nvl" if re.search(r"\bnvl\b", n) else "sxm" if re.search(r"sxm|hbm3", n) else None
    )
    if len(rows) == 1:
        row = rows[0]
        notes: tuple[str, ...] = ()
        if memory not in (None, row.memory_gb):
            notes += (f"{memory} GB differs from the table's {row.name}",)
        if form in ("pcie", "nvl") and row.form is None:
            notes += (f"form factor {form}: the table's {row.name} figures may overstate it",)
        return row, notes
    if form is None and memory is not None and memory > 80 and family == "h100":
        form = "nvl"
    by_form = [g for g in rows if form is not None and g.form == form]
    by_mem = [g for g in rows if memory is not None and g.memory_gb == memory]
    both = [g for g in by_form if g in by_mem]
    if both:
        return both[0], ()
    if by_mem:
        row = by_mem[0]
        fits = form is None or row.form is None or form == row.form
        return row, () if fits else (f"form factor {form} not in the table; using {row.name}",)
    if by_form:
        return by_form[0], ()
    return rows[0], (f"{name!r} does not say its form factor or memory; assumed {rows[0].name}",)


def _positive(value: float | None, what: str) -> float | None:
    if value is not None and not value > 0:
        raise BadInput(f"{what} = {value} is not a positive number: give the dense peak, e.g. 989.4")
    return value


def resolve_peak(
    gpu_name: str | None = None,
    *,
    tflops: float | None = None,
    tbps: float | None = None,
    sm_count: int | None = None,
    clock_hz: float | None = None,
    compute_capability: tuple[int, int] | None = None,
    memory_bandwidth: float | None = None,
) -> Peak:
    """The peak for ``gpu_name`` (user figures win, then the table, then a labelled derivation).

    ``sm_count``, ``clock_hz``, ``compute_capability`` and ``memory_bandwidth`` (bytes/s) are what
    a trace's ``TARGET_INFO_GPU`` or pynvml report; they are used only for GPUs not in the table.
    """
    user_f = _positive(tflops, "--peak-tflops")
    user_b = _positive(tbps, "--peak-tbps")
    row, notes = match_gpu(gpu_name) if gpu_name else (None, ())
    f_val: float | None
    b_val: float | None
    if row is not None:
        f_val, f_src = row.tflops, f"table: {row.name}"
        b_val, b_src = row.tbps, f"table: {row.name}"
    else:
        f_val, f_src, b_val, b_src = None, "unknown", None, "unknown"
        per_clock = FLOPS_PER_CLOCK_PER_SM.get(compute_capability) if compute_capability else None
        if per_clock and sm_count and clock_hz:
            f_val = round(sm_count * clock_hz * per_clock / 1e12, 1)
            f_src = (
                f"derived: {sm_count} SMs x {clock_hz / 1e9:.2f} GHz x {per_clock} FLOP/clk/SM "
                "(max clock: overstates the peak by about 8%)"
            )
        if memory_bandwidth:
            b_val, b_src = memory_bandwidth / 1e12, "derived: the trace's memoryBandwidth"
        if gpu_name and (user_f is None or user_b is None):
            notes = (
                *notes,
                f"GPU {gpu_name!r} is not in the peak table (docs/gpu-peaks.md): give --peak-tflops and --peak-tbps",
            )
    if user_f is not None:
        f_val, f_src = user_f, "user (--peak-tflops)"
    if user_b is not None:
        b_val, b_src = user_b, "user (--peak-tbps)"
    return Peak(f_val, b_val, f_src, b_src, gpu_name, row.name if row else None, tuple(notes))
