"""`dsocr doctor`: each check on fake environments, and the command on this machine."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from dsocr.capture import doctor as d
from dsocr.capture import doctor_facts as facts_mod
from dsocr.cli import main
from dsocr.contract.errors import ExitCode

H100 = "NVIDIA H100 80GB HBM3"
ALL_PACKAGES = dict.fromkeys(("dsocr", *d.ANALYSIS_PACKAGES, *d.CAPTURE_PACKAGES, "transformers"), "1.0")


def gpu_box(**changes: object) -> d.Facts:
    """The H100 test machine as it should be: every check passes."""
    facts = d.Facts(
        python_version="3.12.3",
        packages={**ALL_PACKAGES, "torch": "2.11.0+cu130", "transformers": "5.17.0", "nvtx": "0.2.11"},
        gpus=(d.GpuFact(0, H100, 80 * d.GIB),),
        driver_version="580.65.06",
        driver_cuda="13.0",
        torch_cuda="13.0",
        torch_cuda_available=True,
        nsys=d.NsysFact(path="/opt/nvidia/nsys", version="2025.3.1.90", found_via="$NSYS"),
        peaks=(d.PeakFact(H100, 989.4, 3.35, "H100 SXM5 80GB"),),
        disk_path="/data",
        disk_free_bytes=200 * d.GIB,
    )
    return attrs.evolve(facts, **changes)


def laptop(**changes: object) -> d.Facts:
    """No GPU, no driver, CPU torch, no nsys."""
    base: dict[str, object] = {
        "gpus": (),
        "gpu_error": "NVML: NVML Shared Library Not Found",
        "driver_version": None,
        "driver_cuda": None,
        "torch_cuda": None,
        "torch_cuda_available": False,
        "nsys": d.NsysFact(error="not on PATH"),
        "peaks": (),
        "packages": {**ALL_PACKAGES, "torch": "2.13.0+cpu", "nvtx": "0.2.11"},
    }
    return gpu_box(**{**base, **changes})


def by_name(diagnosis: d.Diagnosis) -> dict[str, d.Check]:
    return {c.name: c for c in diagnosis.checks}


def test_gpu_box_passes_everything() -> None:
    diagnosis = d.diagnose(gpu_box())
    assert [c.status for c in diagnosis.checks] == ["ok"] * len(d.CHECKS)
    assert diagnosis.exit_code == ExitCode.OK
    assert diagnosis.summary == "capture and analysis work here."
    checks = by_name(diagnosis)
    assert "NVIDIA H100 80GB HBM3 (80 GiB); driver 580.65.06, CUDA 13.0" in checks["GPU and driver"].detail
    assert "989.4 TFLOP/s" in checks["GPU peaks"].detail
    assert "new enough for CUDA 13" in checks["nsys"].detail


def test_laptop_analysis_works_capture_does_not() -> None:
    diagnosis = d.diagnose(laptop())
    checks = by_name(diagnosis)
    assert checks["GPU and driver"].status == "fail"
    assert "no NVIDIA GPU/driver (NVML: NVML Shared Library Not Found)" in checks["GPU and driver"].detail
    assert checks["CUDA in torch"].status == "fail"
    assert "Torch not compiled with CUDA enabled" in checks["CUDA in torch"].detail
    assert checks["nsys"].status == "fail"
    assert checks["GPU peaks"].status == "ok"
    assert diagnosis.analysis_ok
    assert not diagnosis.capture_ok
    assert not diagnosis.cpu_capture_ok  # no nsys
    assert diagnosis.exit_code == ExitCode.DOCTOR_PROBLEMS == 7
    assert diagnosis.summary.startswith("analysis works here; GPU capture needs: GPU and driver, CUDA in torch, nsys")
    assert "--device cpu` works here" not in diagnosis.summary


def test_laptop_with_debian_nsys_can_capture_on_cpu() -> None:
    diagnosis = d.diagnose(laptop(nsys=d.NsysFact(path="/x/nsys", version="2023.4.4.54")))
    assert by_name(diagnosis)["nsys"].status == "ok"
    assert "fine for `--device cpu`" in by_name(diagnosis)["nsys"].detail
    assert diagnosis.cpu_capture_ok
    assert diagnosis.summary.endswith("`dsocr capture --device cpu` works here.")


def test_old_nsys_for_cuda13_fails_with_versions() -> None:
    check = d.check_nsys(gpu_box(nsys=d.NsysFact(path="/usr/bin/nsys", version="2023.4.4.54", found_via="PATH")))
    assert check.status == "fail"
    assert check.detail == (
        "nsys 2023.4.4.54 at /usr/bin/nsys (via PATH) is too old for CUDA 13 programs "
        "(needs >= 2025.3; older ones lose kernel records)"
    )
    assert "Nsight Systems >= 2025.3" in check.fix


def test_nsys_minimum_follows_torch_cuda_major() -> None:
    facts = gpu_box(torch_cuda="12.8", nsys=d.NsysFact(path="/n", version="2023.4.4"))
    assert d.required_nsys(facts) == (12, (2022, 4))
    assert d.check_nsys(facts).status == "ok"
    assert d.check_nsys(attrs.evolve(facts, nsys=d.NsysFact(path="/n", version="2022.1.3"))).status == "fail"


def test_nsys_unknown_future_cuda_warns() -> None:
    check = d.check_nsys(gpu_box(torch_cuda="14.0", driver_cuda="14.0"))
    assert check.status == "warn"
    assert "CUDA 14 is newer than dsocr's table" in check.detail


def test_nsys_missing_and_unparsable() -> None:
    missing = d.check_nsys(gpu_box(nsys=d.NsysFact(error="$NSYS=/nope is not an executable")))
    assert missing.status == "fail"
    assert missing.detail == "nsys not found ($NSYS=/nope is not an executable)"
    assert "scripts/install-nsys.sh" in missing.fix
    garbled = d.check_nsys(gpu_box(nsys=d.NsysFact(path="/n", error="Unable to retrieve the importer version")))
    assert garbled.status == "fail"
    assert "Unable to retrieve the importer version" in garbled.detail


@pytest.mark.parametrize(
    ("nvtx", "nsys", "status"),
    [
        ("0.2.11", "2023.4.4", "ok"),
        ("0.2.11", "2025.3.2", "ok"),
        ("0.2.12", "2023.4.4", "fail"),
        ("0.2.17", "2024.2.3", "fail"),
        ("0.2.17", "2024.4.1", "warn"),
        ("0.2.17", "2025.3.2", "ok"),
        ("0.2.17", None, "warn"),
    ],
)
def test_nvtx_version_trap(nvtx: str, nsys: str | None, status: str) -> None:
    facts = gpu_box(
        packages={**ALL_PACKAGES, "nvtx": nvtx},
        nsys=d.NsysFact(path="/n" if nsys else None, version=nsys),
    )
    check = d.check_nvtx_ranges(facts)
    assert check.status == status
    if status == "fail":
        assert check.detail == f"nsys {nsys} silently drops the ranges of nvtx {nvtx} (>= 0.2.12)"
        assert 'pip install "nvtx>=0.2.10,<0.2.12"' in check.fix


def test_nvtx_missing_fails() -> None:
    check = d.check_nvtx_ranges(gpu_box(packages={**ALL_PACKAGES, "nvtx": None}))
    assert (check.status, check.detail) == ("fail", "the nvtx package is not installed")


def test_unknown_gpu_peak_warns_with_override() -> None:
    facts = gpu_box(gpus=(d.GpuFact(0, "NVIDIA Mystery 48GB"),), peaks=(d.PeakFact("NVIDIA Mystery 48GB"),))
    check = d.check_peaks(facts)
    assert check.status == "warn"
    assert check.detail == "no peak known for NVIDIA Mystery 48GB"
    assert "--peak-tflops X --peak-tbps Y" in check.fix
    assert d.diagnose(facts).exit_code == ExitCode.OK  # a warning does not stop capture


def test_peak_facts_use_the_analytic_table() -> None:
    known, vague, unknown = facts_mod.peak_facts(
        (d.GpuFact(0, H100), d.GpuFact(1, "NVIDIA H100"), d.GpuFact(2, "NVIDIA Mystery 48GB"))
    )
    assert (known.tflops, known.tbps, known.label, known.notes) == (989.4, 3.35, "table: H100 SXM5 80GB", ())
    assert vague.notes == ("'NVIDIA H100' does not say its form factor or memory; assumed H100 SXM5 80GB",)
    assert (unknown.tflops, unknown.tbps) == (None, None)
    check = d.check_peaks(gpu_box(gpus=(d.GpuFact(0, "NVIDIA H100"),), peaks=(vague,)))
    assert check.status == "warn"
    assert check.detail == (
        "NVIDIA H100: 989.4 TFLOP/s bf16 dense, 3.35 TB/s (table: H100 SXM5 80GB); "
        "'NVIDIA H100' does not say its form factor or memory; assumed H100 SXM5 80GB"
    )


@pytest.mark.parametrize(("gib", "status"), [(0.5, "fail"), (3.0, "warn"), (50.0, "ok")])
def test_disk(gib: float, status: str) -> None:
    check = d.check_disk(gpu_box(disk_free_bytes=int(gib * d.GIB)))
    assert check.status == status
    assert check.detail.startswith(f"{gib:.1f} GiB free at /data")


def test_low_disk_fails_capture() -> None:
    diagnosis = d.diagnose(gpu_box(disk_free_bytes=100 * 1024**2))
    assert diagnosis.exit_code == ExitCode.DOCTOR_PROBLEMS
    assert diagnosis.summary.startswith("analysis works here; GPU capture needs: free disk")


def test_torch_cuda_newer_than_driver() -> None:
    check = d.check_torch_cuda(gpu_box(driver_cuda="12.4", torch_cuda="13.0"))
    assert check.status == "fail"
    assert check.detail == "torch 2.11.0+cu130 is built for CUDA 13.0, the driver supports CUDA 12.4"
    assert "torch built for CUDA 12" in check.fix


def test_torch_cannot_see_gpu() -> None:
    check = d.check_torch_cuda(gpu_box(torch_cuda_available=False))
    assert check.status == "fail"
    assert "torch.cuda.is_available()` is False" in check.detail


def test_missing_capture_packages_and_the_model_paths_per_transformers() -> None:
    missing = d.check_capture_packages(gpu_box(packages={**ALL_PACKAGES, "torch": None, "pypdfium2": None}))
    assert (missing.status, missing.detail) == ("fail", "missing: torch, pypdfium2")
    assert 'pip install ".[capture]"' in missing.fix
    vendor = d.check_capture_packages(gpu_box(packages={**ALL_PACKAGES, "transformers": "4.46.3"}))
    assert vendor.status == "ok"
    assert vendor.detail.endswith(
        "runs the replica and checkpoints loaded into it; --trust-remote-code too (transformers 4.46.3)"
    )
    newer = d.check_capture_packages(gpu_box(packages={**ALL_PACKAGES, "transformers": "5.25.0"}))
    assert newer.status == "ok"  # the replica needs no transformers at all
    assert newer.detail.endswith("not --trust-remote-code (needs transformers 4.46.3, 5.25.0 installed)")
    none = d.check_capture_packages(gpu_box(packages={**ALL_PACKAGES, "transformers": None}))
    assert none.status == "ok" and none.detail.endswith("(needs transformers 4.46.3, none installed)")


def test_missing_analysis_package_breaks_analysis() -> None:
    diagnosis = d.diagnose(gpu_box(packages={**ALL_PACKAGES, "polars": None}))
    assert not diagnosis.analysis_ok
    assert by_name(diagnosis)["analysis packages"].detail == "missing: polars"
    assert diagnosis.summary == "analysis does not work here; fix: analysis packages."


def test_old_python_fails() -> None:
    check = d.check_python(gpu_box(python_version="3.9.18"))
    assert (check.status, check.detail) == ("fail", "Python 3.9.18 is older than 3.10")


def test_version_parsing() -> None:
    assert d.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert d.version_tuple("0.2.11") == (0, 2, 11)
    assert d.version_tuple("garbage") is None
    assert d.version_tuple(None) is None


def test_json_shape() -> None:
    data = d.diagnose(laptop()).to_json()
    assert data["analysis_ok"] is True
    assert data["capture_ok"] is False
    assert data["exit_code"] == 7
    assert [c["name"] for c in data["checks"]][:3] == ["python", "analysis packages", "capture packages"]
    assert set(data["checks"][0]) == {"name", "scope", "status", "detail", "fix"}
    assert data["facts"]["gpu_error"] == "NVML: NVML Shared Library Not Found"
    json.dumps(data)  # serializable


def _fake_nsys(folder: Path, output: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nsys"
    exe.write_text(f"#!/bin/sh\necho '{output}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_nsys_facts_runs_the_found_executable(tmp_path: Path) -> None:
    exe = _fake_nsys(tmp_path / "bin", "NVIDIA Nsight Systems version 2024.2.3.38-242334140272v0")
    fact = facts_mod.nsys_facts(str(exe))
    assert (fact.path, fact.version, fact.found_via) == (str(exe), "2024.2.3.38", "--nsys")
    from_dir = facts_mod.nsys_facts(str(tmp_path / "bin"))
    assert from_dir.version == "2024.2.3.38"


def test_nsys_facts_explains_a_bad_path(tmp_path: Path) -> None:
    fact = facts_mod.nsys_facts(str(tmp_path / "nope"))
    assert fact.path is None
    assert fact.error == f"{tmp_path / 'nope'} (from --nsys) is not an executable"


def test_nsys_facts_names_a_silent_nsys(tmp_path: Path) -> None:
    exe = _fake_nsys(tmp_path / "bin", "Unable to retrieve the importer version")
    fact = facts_mod.nsys_facts(str(exe))
    assert (fact.path, fact.version) == (str(exe), None)
    assert fact.error is not None and "gave exit code 0 and no version" in fact.error
    assert "Unable to retrieve the importer version" in fact.error
    check = d.check_nsys(attrs.evolve(laptop(), nsys=fact))
    assert check.status == "fail"
    assert check.detail.startswith(f"{exe} (via --nsys) did not report a version")


def test_nsys_facts_follows_nsys_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _fake_nsys(tmp_path / "opt", "NVIDIA Nsight Systems version 2025.3.2.474-253236389321v0")
    monkeypatch.setenv("NSYS", str(exe))
    fact = facts_mod.nsys_facts(None)
    assert (fact.version, fact.found_via) == ("2025.3.2.474", "$NSYS")


def test_disk_free_walks_up_to_an_existing_dir(tmp_path: Path) -> None:
    path, free = facts_mod.disk_free(tmp_path / "runs" / "later")
    assert path == str(tmp_path.resolve())
    assert free is not None and free > 0


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsocr", "doctor", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )


def test_cli_json_on_this_machine(tmp_path: Path) -> None:
    nsys = _fake_nsys(tmp_path / "bin", "NVIDIA Nsight Systems version 2023.4.4.54-234433681190v0")
    result = _run("--json", env={"DSOCR_NSYS": str(nsys), "DSOCR_RUNS_DIR": str(tmp_path / "runs")})
    data = json.loads(result.stdout)
    assert result.returncode == data["exit_code"]
    assert data["analysis_ok"] is True
    assert data["facts"]["nsys"]["version"] == "2023.4.4.54"
    assert data["facts"]["nsys"]["found_via"] == "--nsys"
    assert data["facts"]["disk_path"] == str(tmp_path.resolve())
    assert result.stderr == ""


def _run_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (torch is imported once for the session)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", *args])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_table_and_exit_code_on_a_laptop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = _run_here(capsys, "--nsys", str(tmp_path / "nope"))
    assert f"{tmp_path / 'nope'} (from --nsys) is not an executable" in out
    assert "fixes:" in out
    assert out.strip().splitlines()[-1].startswith("analysis works here; GPU capture needs:")
    assert code == ExitCode.DOCTOR_PROBLEMS
    assert "\x1b[" not in out  # no colours when not a TTY


def test_cli_quiet_prints_only_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    code, out, err = _run_here(capsys, "--quiet", "--nsys", str(tmp_path / "nope"))
    assert out == ""
    assert f"dsocr: warning: nsys: nsys not found ({tmp_path / 'nope'} (from --nsys)" in err
    assert code == ExitCode.DOCTOR_PROBLEMS


class _FakeMemory:
    total = 85_520_809_984


class _FakeNvml:
    """Just enough of pynvml for gpu_facts: one H100 on driver 580 (CUDA 13.0)."""

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"580.65.06"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 13000

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, handle: int) -> str:
        return H100

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _FakeMemory:
        return _FakeMemory()

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return "GPU-1234"


def test_gpu_facts_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, error, driver, cuda = facts_mod.gpu_facts()
    assert gpus == (d.GpuFact(0, H100, 85_520_809_984, "GPU-1234"),)
    assert (error, driver, cuda) == (None, "580.65.06", "13.0")
    assert fake.shut_down


def test_gpu_facts_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(fail_init=True))
    assert facts_mod.gpu_facts() == ((), "NVML: Driver Not Loaded", None, None)


def test_parse_ldd_missing() -> None:
    output = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibssh.so => not found\n"
        "\tlibpfm.so.4 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
        "\tlibssh.so => not found\n"
    )
    assert facts_mod.parse_ldd_missing(output) == ("libpfm.so.4", "libssh.so")
    assert facts_mod.parse_ldd_missing("\tnot a dynamic executable\n") == ()


@pytest.mark.parametrize(
    ("nsys_rel", "importer_rel"),
    [
        ("host/target-linux-x64/nsys", "host/linux-desktop-glibc_2_11_3-x64/QdstrmImporter"),  # Nsight Compute
        ("2025.3.2/target-linux-x64/nsys", "2025.3.2/host-linux-x64/QdstrmImporter"),  # Nsight Systems
    ],
)
def test_find_importer_beside_nsys(tmp_path: Path, nsys_rel: str, importer_rel: str) -> None:
    nsys = tmp_path / nsys_rel
    importer = tmp_path / importer_rel
    for f in (nsys, importer):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("")
    assert facts_mod.find_importer(nsys) == importer.resolve()


def test_importer_missing_libraries_fails_nsys() -> None:
    nsys = d.NsysFact(
        path="/opt/nsys",
        version="2025.3.1.90",
        importer="/opt/host/QdstrmImporter",
        importer_missing=("libdw.so.1", "libssh.so"),
    )
    check = d.check_nsys(gpu_box(nsys=nsys))
    assert check.status == "fail"
    assert check.detail == (
        "nsys 2025.3.1.90 at /opt/nsys: its importer /opt/host/QdstrmImporter cannot load libdw.so.1, libssh.so "
        "(`nsys profile` would leave only a .qdstrm file)"
    )
    assert check.fix.startswith("put a directory holding libdw.so.1, libssh.so on LD_LIBRARY_PATH")


def test_package_versions_from_metadata_or_module() -> None:
    versions = facts_mod.package_versions(("polars", "nvidia-ml-py", "dsocr-no-such-dist"))
    assert versions["polars"] == pl_version()
    assert versions["nvidia-ml-py"] is not None
    assert versions["dsocr-no-such-dist"] is None


def test_package_seen_only_as_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_metadata(name: str) -> str:
        raise facts_mod.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(facts_mod.importlib.metadata, "version", no_metadata)
    versions = facts_mod.package_versions(("nvidia-ml-py", "sqlite-utils", "dsocr-no-such-dist"))
    assert versions == {
        "nvidia-ml-py": facts_mod.NO_METADATA,
        "sqlite-utils": facts_mod.NO_METADATA,
        "dsocr-no-such-dist": None,
    }


def pl_version() -> str:
    import polars

    return str(polars.__version__)


def test_nvtx_without_metadata_warns() -> None:
    check = d.check_nvtx_ranges(gpu_box(packages={**ALL_PACKAGES, "nvtx": d.NO_METADATA}))
    assert check.status == "warn"
    assert check.detail == "nvtx is importable but has no version metadata: cannot tell whether nsys records its ranges"
