"""The run manifest (``manifest.json``): everything needed to reproduce and trust a capture.

Written at the start of a capture with status ``running`` and rewritten (atomically) at every
phase, so a run directory always holds a consistent manifest whose ``status`` is one of
``running``, ``complete``, ``interrupted`` or ``failed`` (with ``failure``: phase and message).

Fields: ``schema_version``, ``dsocr_version``, ``command`` (argv), ``created``/``finished``
(UTC ISO 8601), ``status``, ``failure``, ``settings`` (every capture option), ``workload`` (the
named workload the settings are, or why they are a custom one: :func:`workload_record`), ``seed``,
``inputs`` (one entry per page with file SHA-256), ``environment`` (python, platform, package
versions, torch's CUDA, driver and its CUDA, GPUs via NVML: name, UUID, clocks, memory), ``nsys``
(path, version, how it was found), ``commands`` (the profile/export/baseline command lines),
``phases`` (seconds per phase), ``files`` (what the run directory holds), ``ranges`` (what the
export check found), ``analysis`` (``done``, ``skipped`` or ``failed: ...``). The document's type is
:class:`dsocr.contract.run_manifest.RunManifest`; here: the facts it records and writing it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from dsocr.contract import atomic
from dsocr.contract.run_manifest import (
    SCHEMA_VERSION,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    STATUSES,
    RunManifest,
)
from dsocr.model import workloads

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "STATUS_COMPLETE",
    "STATUS_FAILED",
    "STATUS_INTERRUPTED",
    "STATUS_RUNNING",
    "environment",
    "gpu_environment",
    "package_version",
    "torch_cuda_version",
    "utc_now",
    "workload_record",
    "write",
    "write_to",
]

PACKAGES: Final[tuple[str, ...]] = (
    "dsocr",
    "torch",
    "transformers",
    "nvtx",
    "nvidia-ml-py",
    "pillow",
    "pypdfium2",
    "polars",
    "numpy",
    "safetensors",
)


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def package_version(name: str) -> str | None:
    """An installed distribution's version without importing it (None when absent)."""
    if name == "dsocr":  # a source tree on PYTHONPATH has no distribution metadata
        import dsocr

        return dsocr.__version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """``torch.version.cuda`` read from torch's ``version.py`` without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "version.py"
        with contextlib.suppress(OSError):
            match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.MULTILINE)
            return match.group(1) if match else None
    return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except Exception:
        return None


def gpu_environment() -> dict[str, Any]:
    """Driver, its CUDA and every GPU (name, UUID, clocks in MHz, memory in bytes) via pynvml.

    ``error`` says why there are none (no pynvml, no driver, no GPU).
    """
    try:
        import pynvml
    except ImportError:
        return {"gpus": [], "error": "nvidia-ml-py (pynvml) is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"gpus": [], "error": f"NVML: {exc}"}
    try:
        raw_cuda = _nvml(pynvml.nvmlSystemGetCudaDriverVersion_v2)
        out: dict[str, Any] = {
            "driver_version": _text(_nvml(pynvml.nvmlSystemGetDriverVersion)),
            "driver_cuda": f"{int(raw_cuda) // 1000}.{int(raw_cuda) % 1000 // 10}" if raw_cuda else None,
            "gpus": [],
            "error": None,
        }
        clocks = {"graphics": pynvml.NVML_CLOCK_GRAPHICS, "sm": pynvml.NVML_CLOCK_SM, "memory": pynvml.NVML_CLOCK_MEM}
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = _nvml(pynvml.nvmlDeviceGetMemoryInfo, handle)
            out["gpus"].append(
                {
                    "index": i,
                    "name": _text(_nvml(pynvml.nvmlDeviceGetName, handle)),
                    "uuid": _text(_nvml(pynvml.nvmlDeviceGetUUID, handle)),
                    "clocks_mhz": {k: _nvml(pynvml.nvmlDeviceGetClockInfo, handle, c) for k, c in clocks.items()},
                    "max_clocks_mhz": {
                        k: _nvml(pynvml.nvmlDeviceGetMaxClockInfo, handle, c) for k, c in clocks.items()
                    },
                    "memory_total_bytes": int(memory.total) if memory is not None else None,
                    "memory_used_bytes": int(memory.used) if memory is not None else None,
                    "power_limit_mw": _nvml(pynvml.nvmlDeviceGetPowerManagementLimit, handle),
                }
            )
        if not out["gpus"]:
            out["error"] = "NVML lists no GPU"
        return out
    except Exception as exc:
        return {"gpus": [], "error": f"NVML: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def environment(gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """Python, platform, package versions, torch's CUDA, and the GPU facts."""
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "torch_cuda": torch_cuda_version(),
        **(gpu if gpu is not None else gpu_environment()),
    }


def write_to(path: Path, manifest: RunManifest) -> None:
    """Write ``manifest`` to ``path`` as it is (a temp file of :func:`dsocr.contract.atomic.atomic_path`)."""
    path.write_text(manifest.text(), encoding="utf-8")


def write(path: Path, manifest: RunManifest) -> None:
    """Write ``manifest`` atomically as indented JSON."""
    atomic.write_text(path, manifest.text())


def workload_record(settings: Mapping[str, Any]) -> dict[str, Any]:
    """manifest.json's ``workload``: the named workload's definition the settings match, with
    ``selected`` (``--workload`` or ``defaults``), or ``name`` None and the settings that differ
    from the asked-for (else the default) workload."""
    named = workloads.matching(settings)
    asked = settings.get("workload")
    if named is not None:
        return {**named.to_json(), "selected": "--workload" if asked else "defaults"}
    closest = workloads.get_workload(asked) if isinstance(asked, str) else workloads.DEFAULT
    return {"name": None, "closest": closest.name, "differs": list(workloads.differences(closest, settings))}
