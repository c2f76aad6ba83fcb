"""Gathering the facts ``dsocr doctor`` checks: the only part that looks at the machine.

Nothing heavy is imported at module level: pynvml and torch are imported inside the functions
that need them, and package versions come from the installed metadata.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from dsocr.analytic.peaks import resolve_peak
from dsocr.capture import nsys as nsys_tool
from dsocr.capture.doctor import (
    ANALYSIS_PACKAGES,
    CAPTURE_PACKAGES,
    NO_METADATA,
    VENDOR_PACKAGES,
    Facts,
    GpuFact,
    NsysFact,
    PeakFact,
)
from dsocr.contract.errors import EnvironmentProblem

_DIST_NAMES: Final[tuple[str, ...]] = ("dsocr", *ANALYSIS_PACKAGES, *CAPTURE_PACKAGES, *VENDOR_PACKAGES)


#: Import names of distributions whose module is named differently.
IMPORT_NAMES: Final[dict[str, str]] = {
    "nvidia-ml-py": "pynvml",
    "pillow": "PIL",
    "sqlite-utils": "sqlite_utils",
}


def package_versions(names: Sequence[str] = _DIST_NAMES) -> dict[str, str | None]:
    """Installed distribution versions (None when absent), without importing the packages."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = _module_version(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return versions


def _module_version(module: str) -> str | None:
    """For a module on the path without installed metadata: a marker, or None when it is absent."""
    return NO_METADATA if importlib.util.find_spec(module) is not None else None


def has_deepseek_ocr2() -> bool | None:
    """Whether the installed transformers ships ``models/deepseek_ocr2`` (without importing it)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return any((Path(loc) / "models" / "deepseek_ocr2").is_dir() for loc in spec.submodule_search_locations)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_facts() -> tuple[tuple[GpuFact, ...], str | None, str | None, str | None]:
    """GPUs, the reason there are none, the driver version and the driver's CUDA, via pynvml."""
    try:
        import pynvml
    except ImportError:
        return (), "nvidia-ml-py is not installed", None, None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return (), f"NVML: {exc}", None, None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda: str | None = None
        try:
            raw = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            cuda = f"{raw // 1000}.{raw % 1000 // 10}"
        except Exception:
            cuda = None
        gpus = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                memory: int | None = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception:
                memory = None
            try:
                uuid: str | None = _text(pynvml.nvmlDeviceGetUUID(handle))
            except Exception:
                uuid = None
            gpus.append(GpuFact(index=i, name=_text(pynvml.nvmlDeviceGetName(handle)), memory_bytes=memory, uuid=uuid))
        return tuple(gpus), (None if gpus else "NVML lists no GPU"), driver, cuda
    except Exception as exc:
        return (), f"NVML: {exc}", None, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def torch_facts() -> tuple[str | None, bool | None, str | None]:
    """``torch.version.cuda``, ``torch.cuda.is_available()`` and an import error, if any."""
    if importlib.util.find_spec("torch") is None:
        return None, None, None
    try:
        import torch
    except Exception as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    cuda = getattr(torch.version, "cuda", None)
    try:
        available = bool(torch.cuda.is_available())
    except Exception:
        available = False
    return (str(cuda) if cuda else None), available, None


def nsys_facts(explicit: str | None = None) -> NsysFact:
    """The nsys a capture would use (same search order as the capture: :func:`dsocr.capture.nsys.candidates`)."""
    for path, via in nsys_tool.candidates(Path(explicit) if explicit else None):
        runnable = path.is_file() and os.access(path, os.X_OK)
        if via in ("--nsys", "$NSYS") and not runnable:
            return NsysFact(error=f"{path} (from {via}) is not an executable")
        if runnable:
            try:
                version = nsys_tool.query_version(path)
            except EnvironmentProblem as exc:
                return NsysFact(path=str(path), found_via=via, error=exc.message.split("; ")[0])
            importer = find_importer(path)
            return NsysFact(
                path=str(path),
                version=version.full,
                found_via=via,
                importer=str(importer) if importer else None,
                importer_missing=missing_libraries(importer) if importer else (),
            )
    return NsysFact(error=f"searched {NSYS_SEARCHED}")


def find_importer(nsys: Path) -> Path | None:
    """The QdstrmImporter beside an nsys (``../host-linux-x64``, Nsight Compute's ``../linux-desktop-*``)."""
    here = nsys.resolve().parent
    for root in (here, here.parent, here.parent.parent):
        hits = sorted(root.glob("*/QdstrmImporter"))
        if hits:
            return hits[0]
    return None


def missing_libraries(binary: Path) -> tuple[str, ...]:
    """Shared libraries ``ldd`` reports as ``not found`` for ``binary`` (empty when ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return ()
    try:
        done = subprocess.run([ldd, str(binary)], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return parse_ldd_missing(done.stdout)


def parse_ldd_missing(output: str) -> tuple[str, ...]:
    """The ``libX.so => not found`` names in ``ldd`` output, sorted."""
    return tuple(sorted(set(re.findall(r"^\s*(\S+) => not found", output, flags=re.M))))


NSYS_SEARCHED: Final = (
    "--nsys, $NSYS, $DSOCR_NSYS_HOME, PATH, /opt/nvidia/nsight-systems/*/bin, "
    "/opt/nvidia/nsight-compute/*/host/target-linux-x64, /usr/local/cuda/bin, ./.tools/nsys"
)


def peak_facts(gpus: Sequence[GpuFact]) -> tuple[PeakFact, ...]:
    """The peak each GPU would get from the analytic layer's table (None where it is unknown)."""
    out = []
    for gpu in gpus:
        peak = resolve_peak(gpu.name)
        out.append(PeakFact(gpu=gpu.name, tflops=peak.tflops, tbps=peak.tbps, label=peak.source, notes=peak.notes))
    return tuple(out)


def disk_free(path: Path) -> tuple[str, int | None]:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return str(probe), shutil.disk_usage(probe).free
    except OSError:
        return str(probe), None


def gather_facts(
    *,
    nsys: str | None = None,
    runs_dir: Path = Path("runs"),
    step: Callable[[str], None] | None = None,
) -> Facts:
    """Look at this machine once; ``step`` is told what is being looked at (for a spinner)."""

    def tell(what: str) -> None:
        if step is not None:
            step(what)

    tell("packages")
    packages = package_versions()
    tell("GPU and driver (NVML)")
    gpus, gpu_error, driver, driver_cuda = gpu_facts()
    tell("torch and CUDA")
    torch_cuda, torch_available, torch_error = torch_facts()
    tell("nsys")
    nsys_fact = nsys_facts(nsys)
    tell("peaks and disk")
    disk_path, free = disk_free(runs_dir)
    return Facts(
        python_version=platform.python_version(),
        platform=f"({sys.platform}, {platform.machine()})",
        packages=packages,
        deepseek_ocr2=has_deepseek_ocr2() if packages.get("transformers") else None,
        gpus=gpus,
        gpu_error=gpu_error,
        driver_version=driver,
        driver_cuda=driver_cuda,
        torch_cuda=torch_cuda,
        torch_cuda_available=torch_available,
        torch_error=torch_error,
        nsys=nsys_fact,
        peaks=peak_facts(gpus),
        disk_path=disk_path,
        disk_free_bytes=free,
    )
