"""Manifest facts: GPU details through (a fake) pynvml, torch's CUDA read without importing torch."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from dsocr.capture import manifest
from dsocr.contract.run_manifest import RunManifest, read_manifest


class _Mem:
    total = 85_520_809_984
    used = 1_234_567


def _fake_pynvml(gpus: int = 1, fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        if fail_init:
            raise RuntimeError("Driver Not Loaded")
        calls.append("init")

    clocks = {0: 1980, 1: 1980, 2: 2619}
    attrs: dict[str, Any] = {
        "NVML_CLOCK_GRAPHICS": 0,
        "NVML_CLOCK_SM": 1,
        "NVML_CLOCK_MEM": 2,
        "nvmlInit": init,
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlSystemGetDriverVersion": lambda: b"580.95.05",
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 13000,
        "nvmlDeviceGetCount": lambda: gpus,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h:04d}",
        "nvmlDeviceGetMemoryInfo": lambda h: _Mem(),
        "nvmlDeviceGetClockInfo": lambda h, c: clocks[c] - 100,
        "nvmlDeviceGetMaxClockInfo": lambda h, c: clocks[c],
        "nvmlDeviceGetPowerManagementLimit": lambda h: (_ for _ in ()).throw(RuntimeError("not supported")),
        "calls": calls,
    }
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def test_gpu_environment_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    env = manifest.gpu_environment()
    assert env == {
        "driver_version": "580.95.05",
        "driver_cuda": "13.0",
        "error": None,
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-0000",
                "clocks_mhz": {"graphics": 1880, "sm": 1880, "memory": 2519},
                "max_clocks_mhz": {"graphics": 1980, "sm": 1980, "memory": 2619},
                "memory_total_bytes": 85_520_809_984,
                "memory_used_bytes": 1_234_567,
                "power_limit_mw": None,
            }
        ],
    }
    assert fake.calls == ["init", "shutdown"]


def test_gpu_environment_without_driver_or_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    assert manifest.gpu_environment() == {"gpus": [], "error": "NVML: Driver Not Loaded"}
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(gpus=0))
    env = manifest.gpu_environment()
    assert (env["gpus"], env["error"]) == ([], "NVML lists no GPU")


def test_torch_cuda_version_read_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "version.py").write_text("__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n")
    spec = types.SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(manifest.importlib.util, "find_spec", lambda name: spec if name == "torch" else None)
    assert manifest.torch_cuda_version() == "13.0"
    (pkg / "version.py").write_text("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n")
    assert manifest.torch_cuda_version() is None


def test_write_is_atomic_json_and_read_names_garbage(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest.write(path, RunManifest.from_json({"status": "running", "cwd": str(tmp_path)}))
    doc, problem = read_manifest(path)
    assert problem is None and doc is not None and doc.to_json() == {"status": "running", "cwd": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    path.write_text("{not json")
    assert read_manifest(path)[0] is None and "corrupt" in str(read_manifest(path)[1])
    assert read_manifest(tmp_path / "missing.json") == (None, None)
