"""``dsocr doctor``: can this machine analyze traces, and can it capture them?

:func:`gather_facts` looks at the machine once (package versions, GPU and driver through
pynvml, CUDA in torch, nsys, peaks, free disk) and returns plain data; every check is a small
pure function of those :class:`Facts`, so tests feed fake environments. :func:`diagnose` runs
them all. Capture needs every check to pass; analysis needs only the ``analysis`` ones, so a
laptop without a GPU is told "analysis works here; capture needs ...".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs

from dsocr.capture import nsys as nsys_tool
from dsocr.contract.errors import ExitCode

Status = Literal["ok", "warn", "fail"]
Scope = Literal["analysis", "capture"]

#: Distributions the analysis needs (the base install).
ANALYSIS_PACKAGES: Final[tuple[str, ...]] = (
    "polars",
    "connectorx",
    "typer",
    "attrs",
    "jinja2",
    "sqlite-utils",
    "rich",
    "pillow",
)
#: Distributions the GPU capture needs (the ``capture`` extra).
CAPTURE_PACKAGES: Final[tuple[str, ...]] = (
    "torch",
    "transformers",
    "nvtx",
    "nvidia-ml-py",
    "pypdfium2",
    "safetensors",
    "numpy",
)
#: Distributions the checkpoint's own code imports besides torch and transformers 4.46.3 (``--trust-remote-code``).
VENDOR_PACKAGES: Final[tuple[str, ...]] = ("addict", "easydict", "einops", "torchvision")
CHECK_MODEL_PATHS: Final = "model paths"

#: The nsys tables live with the capture's nsys handling, so doctor and capture agree.
MIN_NSYS_FOR_CUDA: Final = nsys_tool.MIN_NSYS_FOR_CUDA
NVTX_NEW_API: Final = nsys_tool.NVTX_NEW_API
NSYS_DROPS_NEW_NVTX: Final = nsys_tool.NSYS_DROPS_NEW_NVTX
#: From this nsys on, ranges of the newer ``nvtx`` are recorded (0.2.17 with 2025.3 on the H100).
NSYS_RECORDS_NEW_NVTX: Final = (2025, 3)
#: The dependency range that works with every nsys tried (pyproject's ``capture`` extra).
NVTX_PIN: Final = "nvtx>=0.2.10,<0.2.12"

#: Free space below which a capture is likely to fail (GiB), and below which to warn.
DISK_FAIL_GIB: Final = 1.0
DISK_WARN_GIB: Final = 5.0

GIB: Final = 1024**3
#: The version recorded for a package importable from the path but without installed metadata.
NO_METADATA: Final = "present (no metadata)"

CHECK_GPU: Final = "GPU and driver"
CHECK_TORCH_CUDA: Final = "CUDA in torch"


@attrs.frozen
class GpuFact:
    """One GPU as NVML reports it."""

    index: int
    name: str
    memory_bytes: int | None = None
    uuid: str | None = None


@attrs.frozen
class NsysFact:
    """The nsys that a capture would use."""

    path: str | None = None
    version: str | None = None  #: e.g. ``2025.3.2.474``
    found_via: str | None = None  #: ``--nsys``, ``$NSYS``, ``PATH``, a directory searched, ...
    error: str | None = None  #: why it was not found or did not run
    importer: str | None = None  #: its QdstrmImporter (turns the raw capture into .nsys-rep), if found
    importer_missing: tuple[str, ...] = ()  #: shared libraries the importer cannot load (``ldd``)


@attrs.frozen
class PeakFact:
    """The peak a report would use for a GPU (None when the GPU is not in the table)."""

    gpu: str
    tflops: float | None = None
    tbps: float | None = None
    label: str | None = None  #: where the figures come from (``table: H100 SXM5 80GB``)
    notes: tuple[str, ...] = ()  #: assumptions made in matching the name


@attrs.frozen
class Facts:
    """Everything the checks look at: gathered once, or built by hand in tests."""

    python_version: str
    platform: str = ""
    packages: dict[str, str | None] = attrs.field(factory=dict)  #: distribution -> version, None if absent
    deepseek_ocr2: bool | None = None  #: transformers ships ``models/deepseek_ocr2`` (None: no transformers)
    gpus: tuple[GpuFact, ...] = ()
    gpu_error: str | None = None  #: why NVML gave no GPUs
    driver_version: str | None = None
    driver_cuda: str | None = None  #: the newest CUDA the driver supports, e.g. ``13.0``
    torch_cuda: str | None = None  #: ``torch.version.cuda``; None for a CPU build
    torch_cuda_available: bool | None = None  #: ``torch.cuda.is_available()``; None without torch
    torch_error: str | None = None
    nsys: NsysFact = attrs.field(factory=NsysFact)
    peaks: tuple[PeakFact, ...] = ()
    disk_path: str = "."
    disk_free_bytes: int | None = None


@attrs.frozen
class Check:
    """One line of the doctor's table."""

    name: str
    scope: Scope
    status: Status
    detail: str
    fix: str = ""


@attrs.frozen
class Diagnosis:
    """All checks, and what they mean for analysis and capture."""

    checks: tuple[Check, ...]
    facts: Facts

    @property
    def analysis_ok(self) -> bool:
        """No ``analysis`` check failed."""
        return not any(c.status == "fail" and c.scope == "analysis" for c in self.checks)

    @property
    def capture_ok(self) -> bool:
        """No check failed at all."""
        return not any(c.status == "fail" for c in self.checks)

    @property
    def cpu_capture_ok(self) -> bool:
        """Only the GPU-side checks failed: ``dsocr capture --device cpu`` can run."""
        gpu_side = {CHECK_GPU, CHECK_TORCH_CUDA}
        return not any(c.status == "fail" and c.name not in gpu_side for c in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        """0 when capture can work here, ``DOCTOR_PROBLEMS`` (7) when it cannot."""
        return ExitCode.OK if self.capture_ok else ExitCode.DOCTOR_PROBLEMS

    @property
    def summary(self) -> str:
        """One sentence for people: what works here and what capture still needs."""
        failed = [c.name for c in self.checks if c.status == "fail"]
        if not failed:
            warned = [c.name for c in self.checks if c.status == "warn"]
            tail = f" (see the warnings: {', '.join(warned)})" if warned else ""
            return f"capture and analysis work here{tail}."
        needs = ", ".join(failed)
        if self.analysis_ok:
            cpu = " `dsocr capture --device cpu` works here." if self.cpu_capture_ok else ""
            return (
                f"analysis works here; GPU capture needs: {needs} (see the fixes; "
                f"exit code {int(ExitCode.DOCTOR_PROBLEMS)} only means GPU capture cannot run here).{cpu}"
            )
        return f"analysis does not work here; fix: {needs}."

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready data."""
        return {
            "analysis_ok": self.analysis_ok,
            "capture_ok": self.capture_ok,
            "exit_code": int(self.exit_code),
            "summary": self.summary,
            "checks": [attrs.asdict(c) for c in self.checks],
            "facts": attrs.asdict(self.facts),
        }


# ---------------------------------------------------------------------------------------
# Version helpers


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """The leading numeric components of a version string (``2.13.0+cpu`` -> ``(2, 13, 0)``)."""
    if not text:
        return None
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    if not match:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _fmt_version(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def _cuda_major(text: str | None) -> int | None:
    v = version_tuple(text)
    return v[0] if v else None


# ---------------------------------------------------------------------------------------
# The checks: each a pure function of the facts


def check_python(facts: Facts) -> Check:
    """Python >= 3.10."""
    v = version_tuple(facts.python_version) or (0,)
    if v[:2] >= (3, 10):
        return Check("python", "analysis", "ok", f"Python {facts.python_version} {facts.platform}".strip())
    return Check(
        "python",
        "analysis",
        "fail",
        f"Python {facts.python_version} is older than 3.10",
        "install Python >= 3.10 and reinstall dsocr in it",
    )


def check_analysis_packages(facts: Facts) -> Check:
    """The base install's packages are present."""
    missing = [p for p in ANALYSIS_PACKAGES if facts.packages.get(p) is None]
    found = ", ".join(f"{p} {facts.packages[p]}" for p in ("dsocr", "polars") if facts.packages.get(p))
    if missing:
        return Check(
            "analysis packages",
            "analysis",
            "fail",
            f"missing: {', '.join(missing)}",
            "reinstall dsocr (`pip install .` in the source tree, or `pip install dsocr`)",
        )
    return Check("analysis packages", "analysis", "ok", found or "all present")


def check_capture_packages(facts: Facts) -> Check:
    """The ``capture`` extra's packages are present and transformers has the replica's blocks."""
    missing = [p for p in CAPTURE_PACKAGES if facts.packages.get(p) is None]
    if missing:
        return Check(
            "capture packages",
            "capture",
            "fail",
            f"missing: {', '.join(missing)}",
            'install the capture extra: `pip install ".[capture]"` (or `pip install "dsocr[capture]"`)',
        )
    if facts.deepseek_ocr2 is False:
        return Check(
            "capture packages",
            "capture",
            "fail",
            f"transformers {facts.packages['transformers']} has no models/deepseek_ocr2 (the replica's blocks)",
            'install a transformers that has it: `pip install -U "transformers>=5.17"`',
        )
    shown = ", ".join(f"{p} {facts.packages[p]}" for p in ("torch", "transformers", "nvtx"))
    return Check("capture packages", "capture", "ok", shown)


def vendor_path_missing(facts: Facts) -> list[str]:
    """What the checkpoint's own code (``--trust-remote-code``) lacks here (empty: it can run)."""
    from dsocr.execution.checkpoint_rules import VENDOR_TRANSFORMERS

    missing = []
    found = facts.packages.get("transformers")
    if found != VENDOR_TRANSFORMERS:
        missing.append(f"transformers=={VENDOR_TRANSFORMERS} (found {found or 'none'})")
    if facts.packages.get("torch") is None:
        missing.append("torch")
    missing += [p for p in VENDOR_PACKAGES if facts.packages.get(p) is None]
    return missing


def check_model_paths(facts: Facts) -> Check:
    """Which model paths run here: dsocr's replica, the checkpoint's own code (never a failure: both optional)."""
    replica = "replica: yes" if facts.packages.get("torch") else "replica: no (needs torch)"
    missing = vendor_path_missing(facts)
    if not missing:
        return Check(CHECK_MODEL_PATHS, "capture", "ok", f"{replica}; checkpoint's own code (--trust-remote-code): yes")
    return Check(
        CHECK_MODEL_PATHS,
        "capture",
        "ok",
        f"{replica}; checkpoint's own code (--trust-remote-code): no, missing {', '.join(missing)}",
        "for --trust-remote-code use a second environment: "
        f"pip install transformers==4.46.3 {' '.join(VENDOR_PACKAGES)} and dsocr (docs/capture.md)",
    )


def check_gpu(facts: Facts) -> Check:
    """An NVIDIA GPU and driver answer through NVML."""
    if not facts.gpus:
        reason = facts.gpu_error or "NVML lists no GPU"
        return Check(
            CHECK_GPU,
            "capture",
            "fail",
            f"no NVIDIA GPU/driver ({reason})",
            "GPU capture needs an NVIDIA GPU with its driver (`nvidia-smi` must work); "
            "`dsocr capture --device cpu` still runs the pipeline on the CPU (NVTX ranges, no kernels)",
        )
    names = "; ".join(
        f"{g.index}: {g.name}" + (f" ({g.memory_bytes / GIB:.0f} GiB)" if g.memory_bytes else "") for g in facts.gpus
    )
    driver = f"driver {facts.driver_version or '?'}, CUDA {facts.driver_cuda or '?'}"
    return Check(CHECK_GPU, "capture", "ok", f"{names}; {driver}")


def check_torch_cuda(facts: Facts) -> Check:
    """torch is a CUDA build that sees the GPU, for a CUDA the driver supports."""
    torch_version = facts.packages.get("torch")
    if torch_version is None:
        return Check(
            CHECK_TORCH_CUDA,
            "capture",
            "fail",
            "torch is not installed",
            'install the capture extra: `pip install ".[capture]"` (a CUDA build of torch)',
        )
    if facts.torch_error:
        return Check(
            CHECK_TORCH_CUDA,
            "capture",
            "fail",
            f"torch {torch_version} failed to import: {facts.torch_error}",
            "reinstall torch in this environment",
        )
    want = f" for CUDA {facts.driver_cuda} or older" if facts.driver_cuda else ""
    if not facts.torch_cuda:
        return Check(
            CHECK_TORCH_CUDA,
            "capture",
            "fail",
            f"torch {torch_version} is a CPU-only build (`Torch not compiled with CUDA enabled`)",
            f"install a CUDA build of torch{want} (pytorch.org's install selector); "
            "CPU torch still runs `dsocr capture --device cpu`",
        )
    torch_major, driver_major = _cuda_major(facts.torch_cuda), _cuda_major(facts.driver_cuda)
    if torch_major is not None and driver_major is not None and torch_major > driver_major:
        return Check(
            CHECK_TORCH_CUDA,
            "capture",
            "fail",
            f"torch {torch_version} is built for CUDA {facts.torch_cuda}, the driver supports CUDA {facts.driver_cuda}",
            f"upgrade the NVIDIA driver, or install a torch built for CUDA {driver_major}",
        )
    if facts.gpus and facts.torch_cuda_available is False:
        return Check(
            CHECK_TORCH_CUDA,
            "capture",
            "fail",
            f"torch {torch_version} (CUDA {facts.torch_cuda}) cannot use the GPU "
            "(`torch.cuda.is_available()` is False)",
            "check CUDA_VISIBLE_DEVICES and that the driver matches; `python -c 'import torch; torch.cuda.init()'` "
            "shows why",
        )
    seen = "sees the GPU" if facts.torch_cuda_available else "no GPU to use here"
    return Check(CHECK_TORCH_CUDA, "capture", "ok", f"torch {torch_version}, CUDA {facts.torch_cuda}; {seen}")


def required_nsys(facts: Facts) -> tuple[int | None, tuple[int, int] | None]:
    """The CUDA major a capture's program uses here, and the oldest nsys that records its kernels."""
    major = _cuda_major(facts.torch_cuda) or _cuda_major(facts.driver_cuda)
    if major is None:
        return None, None
    known = [m for m in MIN_NSYS_FOR_CUDA if m <= major]
    return major, MIN_NSYS_FOR_CUDA[max(known)] if known else None


def check_nsys(facts: Facts) -> Check:
    """nsys is found, runs, and is new enough for the CUDA the capture's program uses."""
    major, minimum = required_nsys(facts)
    need = f" >= {_fmt_version(minimum)}" if minimum else ""
    get = (
        f"install Nsight Systems{need} (NVIDIA's download, or the nsys inside Nsight Compute's "
        "host/target-linux-x64), or point `--nsys`/$NSYS at it"
    )
    if facts.nsys.path is None:
        return Check(
            "nsys",
            "capture",
            "fail",
            f"nsys not found ({facts.nsys.error or 'not on PATH nor in the usual places'})",
            get + "; for `--device cpu` only, `bash scripts/install-nsys.sh` unpacks Debian's 2023.4",
        )
    where = f"{facts.nsys.path}" + (f" (via {facts.nsys.found_via})" if facts.nsys.found_via else "")
    version = version_tuple(facts.nsys.version)
    if version is None:
        return Check(
            "nsys",
            "capture",
            "fail",
            f"{where} did not report a version ({facts.nsys.error or 'unparsable `nsys --version`'})",
            "check that it runs: `nsys --version`; " + get,
        )
    if major is not None and major > max(MIN_NSYS_FOR_CUDA):
        return Check(
            "nsys",
            "capture",
            "warn",
            f"nsys {facts.nsys.version} at {where}; CUDA {major} is newer than dsocr's table",
            "use the newest Nsight Systems; check that kernels appear in the trace",
        )
    if minimum is not None and version[:2] < minimum:
        return Check(
            "nsys",
            "capture",
            "fail",
            f"nsys {facts.nsys.version} at {where} is too old for CUDA {major} programs "
            f"(needs >= {_fmt_version(minimum)}; older ones lose kernel records)",
            get,
        )
    if facts.nsys.importer_missing:
        missing = ", ".join(facts.nsys.importer_missing)
        return Check(
            "nsys",
            "capture",
            "fail",
            f"nsys {facts.nsys.version} at {where}: its importer {facts.nsys.importer} cannot load {missing} "
            "(`nsys profile` would leave only a .qdstrm file)",
            f"put a directory holding {missing} on LD_LIBRARY_PATH (install them with the system's package manager)",
        )
    cuda_note = f", new enough for CUDA {major}" if major is not None else ", fine for `--device cpu`"
    return Check("nsys", "capture", "ok", f"nsys {facts.nsys.version} at {where}{cuda_note}")


def check_nvtx_ranges(facts: Facts) -> Check:
    """The installed ``nvtx`` package's ranges will be recorded by that nsys."""
    if facts.packages.get("nvtx") == NO_METADATA:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "warn",
            "nvtx is importable but has no version metadata: cannot tell whether nsys records its ranges",
            f'`pip install "{NVTX_PIN}"` (with metadata; recorded by every nsys tried)',
        )
    nvtx_version = version_tuple(facts.packages.get("nvtx"))
    if nvtx_version is None:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "fail",
            "the nvtx package is not installed",
            f'`pip install "{NVTX_PIN}"` (part of the capture extra)',
        )
    nvtx_text = facts.packages["nvtx"]
    if nvtx_version < NVTX_NEW_API:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "ok",
            f"nvtx {nvtx_text} (< 0.2.12) is recorded by every nsys tried (2023.4, 2025.3)",
        )
    nsys_version = version_tuple(facts.nsys.version)
    if nsys_version is None:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "warn",
            f"nvtx {nvtx_text}: no nsys version to check it against",
            f'nsys <= 2024.2 drops its ranges: `pip install "{NVTX_PIN}"` is safe with every nsys',
        )
    if nsys_version[:2] <= NSYS_DROPS_NEW_NVTX:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "fail",
            f"nsys {facts.nsys.version} silently drops the ranges of nvtx {nvtx_text} (>= 0.2.12)",
            f'`pip install "{NVTX_PIN}"`, or use nsys >= {_fmt_version(NSYS_RECORDS_NEW_NVTX)}',
        )
    if nsys_version[:2] >= NSYS_RECORDS_NEW_NVTX:
        return Check(
            "NVTX ranges recorded",
            "capture",
            "ok",
            f"nvtx {nvtx_text} with nsys {facts.nsys.version} (>= 2025.3 records them)",
        )
    return Check(
        "NVTX ranges recorded",
        "capture",
        "warn",
        f"nvtx {nvtx_text} with nsys {facts.nsys.version}: an untried pair (2024.2 drops them, 2025.3 records them)",
        f'`pip install "{NVTX_PIN}"` to be safe; the capture checks that its ranges reached the trace',
    )


def check_peaks(facts: Facts) -> Check:
    """The GPUs here have known peaks for MFU/MBU."""
    if not facts.gpus:
        return Check(
            "GPU peaks",
            "analysis",
            "ok",
            "no GPU here; analysis looks up the GPU named in each trace",
        )
    fix = (
        "pass the dense bf16 peak and memory bandwidth: `--peak-tflops X --peak-tbps Y` "
        "(see `--help` for their variables) so MFU/MBU are right"
    )
    known = [p for p in facts.peaks if p.tflops is not None and p.tbps is not None]
    unknown = [p.gpu for p in facts.peaks if p not in known] or ([] if facts.peaks else [g.name for g in facts.gpus])
    parts = [f"{p.gpu}: {p.tflops:g} TFLOP/s bf16 dense, {p.tbps:g} TB/s ({p.label})" for p in known]
    notes = [n for p in known for n in p.notes]
    if unknown:
        parts.append(f"no peak known for {', '.join(unknown)}")
    if unknown or notes:
        return Check("GPU peaks", "analysis", "warn", "; ".join(parts + notes), fix)
    return Check("GPU peaks", "analysis", "ok", "; ".join(parts))


def check_disk(facts: Facts) -> Check:
    """Enough free disk for a capture (a 12-page, 3-repeat capture writes a few hundred MB)."""
    if facts.disk_free_bytes is None:
        return Check("free disk", "capture", "warn", f"could not read free space at {facts.disk_path}", "")
    free = facts.disk_free_bytes / GIB
    detail = f"{free:.1f} GiB free at {facts.disk_path}"
    fix = "free some space, or capture into a larger disk with `--runs-dir DIR` (DSOCR_RUNS_DIR)"
    if free < DISK_FAIL_GIB:
        return Check("free disk", "capture", "fail", detail + f" (< {DISK_FAIL_GIB:g} GiB)", fix)
    if free < DISK_WARN_GIB:
        return Check(
            "free disk", "capture", "warn", detail + f" (< {DISK_WARN_GIB:g} GiB: large captures may fail)", fix
        )
    return Check("free disk", "capture", "ok", detail)


CHECKS: Final[tuple[Callable[[Facts], Check], ...]] = (
    check_python,
    check_analysis_packages,
    check_capture_packages,
    check_model_paths,
    check_gpu,
    check_torch_cuda,
    check_nsys,
    check_nvtx_ranges,
    check_peaks,
    check_disk,
)


def diagnose(facts: Facts) -> Diagnosis:
    """Run every check on the facts."""
    return Diagnosis(checks=tuple(check(facts) for check in CHECKS), facts=facts)
