"""nsys discovery order (fake executables), version parsing, the CUDA check and command lines."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from dsocr.capture import nsys
from dsocr.capture.nsys import NsysVersion
from dsocr.contract.errors import EnvironmentProblem, ExitCode


def _fake(path: Path, version: str = "2025.3.2.474-253236389321v0", rc: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'NVIDIA Nsight Systems version {version}'\nexit {rc}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    return {"opt_root": tmp_path / "opt", "cuda_root": tmp_path / "cuda", "cwd": tmp_path / "work"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("NVIDIA Nsight Systems version 2023.4.4.54-234433681190v0\n", NsysVersion(2023, 4, 4, 54)),
        ("NVIDIA Nsight Systems version 2025.3.2.474-253236389321v0", NsysVersion(2025, 3, 2, 474)),
        ("NVIDIA Nsight Systems version 2024.2.1.106-242134037904v0", NsysVersion(2024, 2, 1, 106)),
        ("version 2022.4", NsysVersion(2022, 4, 0, 0)),
        ("command not found", None),
    ],
)
def test_parse_version(output: str, expected: NsysVersion | None) -> None:
    assert nsys.parse_version(output) == expected


def test_version_text() -> None:
    v = NsysVersion(2025, 3, 2, 474)
    assert (str(v), v.full, v.release_tuple) == ("2025.3.2", "2025.3.2.474", (2025, 3))
    assert NsysVersion(2023, 4, 4) < NsysVersion(2024, 2, 1) < NsysVersion(2025, 3, 0)


def test_search_order(tmp_path: Path, roots: dict[str, Path]) -> None:
    opt, cuda, cwd = roots["opt_root"], roots["cuda_root"], roots["cwd"]
    tools = _fake(cwd / ".tools/nsys/usr/lib/x86_64-linux-gnu/nsight-systems/target-linux-x64/nsys", "2023.4.4.54")
    env: dict[str, str] = {"PATH": ""}
    found = nsys.find(env=env, **roots)  # type: ignore[arg-type]
    assert (found.path, found.found_via, str(found.version)) == (tools, "./.tools/nsys", "2023.4.4")

    cuda_bin = _fake(cuda / "bin/nsys", "2024.2.1.106")
    assert nsys.find(env=env, **roots).path == cuda_bin  # type: ignore[arg-type]

    _fake(opt / "nsight-compute/2025.1.0/host/target-linux-x64/nsys", "2024.6.1.90")
    ncu_new = _fake(opt / "nsight-compute/2025.3.1/host/target-linux-x64/nsys", "2025.3.1.90")
    found = nsys.find(env=env, **roots)  # type: ignore[arg-type]
    assert (found.path, found.found_via) == (ncu_new, str(ncu_new.parent))

    _fake(opt / "nsight-systems/2024.6.2/bin/nsys", "2024.6.2.225")
    systems = _fake(opt / "nsight-systems/2025.3.2/bin/nsys", "2025.3.2.474")
    assert nsys.find(env=env, **roots).path == systems  # type: ignore[arg-type]

    on_path = _fake(tmp_path / "pathdir/nsys", "2025.5.1.121")
    env["PATH"] = str(on_path.parent)
    assert nsys.find(env=env, **roots).found_via == "PATH"  # type: ignore[arg-type]

    home = tmp_path / "home"
    home_nsys = _fake(home / "usr/lib/x86_64-linux-gnu/nsight-systems/target-linux-x64/nsys", "2023.4.4.54")
    env["DSOCR_NSYS_HOME"] = str(home)
    found = nsys.find(env=env, **roots)  # type: ignore[arg-type]
    assert (found.path, found.found_via) == (home_nsys, "$DSOCR_NSYS_HOME")

    env_nsys = _fake(tmp_path / "envdir/nsys", "2025.3.2.474")
    env["NSYS"] = str(env_nsys)
    assert nsys.find(env=env, **roots).found_via == "$NSYS"  # type: ignore[arg-type]

    explicit = _fake(tmp_path / "explicit/nsys", "2025.3.2.474")
    found = nsys.find(explicit=explicit.parent, env=env, **roots)  # type: ignore[arg-type]
    assert (found.path, found.found_via) == (explicit, "--nsys")


def test_not_found_message(roots: dict[str, Path]) -> None:
    with pytest.raises(EnvironmentProblem) as exc:
        nsys.find(env={"PATH": ""}, **roots)  # type: ignore[arg-type]
    assert exc.value.exit_code == ExitCode.ENVIRONMENT
    assert exc.value.message.startswith("nsys not found (searched --nsys, $NSYS, $DSOCR_NSYS_HOME, PATH, ")
    assert "install Nsight Systems >= 2025.3" in exc.value.message
    assert "bash scripts/install-nsys.sh" in exc.value.message
    assert "\n" not in exc.value.message


def test_explicit_path_missing_or_broken(tmp_path: Path, roots: dict[str, Path]) -> None:
    with pytest.raises(EnvironmentProblem) as exc:
        nsys.find(explicit=tmp_path / "missing/nsys", env={}, **roots)  # type: ignore[arg-type]
    assert exc.value.message.startswith(f"{tmp_path / 'missing/nsys'} (from --nsys): no such nsys executable; ")
    broken = _fake(tmp_path / "broken/nsys", "garbage", rc=1)
    with pytest.raises(EnvironmentProblem) as exc:
        nsys.find(env={"NSYS": str(broken)}, **roots)  # type: ignore[arg-type]
    assert exc.value.message.startswith(
        f"{broken}: `nsys --version` gave exit code 1 and no version (NVIDIA Nsight Systems version garbage); "
    )


def test_too_old_for_cuda_13(tmp_path: Path) -> None:
    old = nsys.Nsys(path=tmp_path / "nsys", version=NsysVersion(2023, 4, 4, 54), found_via="PATH")
    with pytest.raises(EnvironmentProblem) as exc:
        nsys.check_for_cuda(old, "13.0")
    assert exc.value.message.startswith(
        f"nsys 2023.4.4 at {tmp_path / 'nsys'} (via PATH) is too old for CUDA 13.0 programs (torch's CUDA): "
        "it loses their kernel records; nsys >= 2025.3 is needed: install Nsight Systems"
    )
    nsys.check_for_cuda(old, "12.4")
    nsys.check_for_cuda(old, None)
    nsys.check_for_cuda(attrs.evolve(old, version=NsysVersion(2025, 3, 1)), "13.0")


def test_drops_new_nvtx() -> None:
    assert nsys.drops_new_nvtx(NsysVersion(2023, 4, 4), "0.2.12")
    assert nsys.drops_new_nvtx(NsysVersion(2024, 2, 1), "0.2.17")
    assert not nsys.drops_new_nvtx(NsysVersion(2023, 4, 4), "0.2.11")
    assert not nsys.drops_new_nvtx(NsysVersion(2025, 3, 2), "0.2.17")


def test_profile_command_cuda(tmp_path: Path) -> None:
    cmd = nsys.profile_command(Path("/x/nsys"), tmp_path / "trace", ["python", "-m", "w"], "cuda")
    assert cmd == [
        "/x/nsys",
        "profile",
        "--trace=cuda,nvtx",
        "--sample=none",
        "--cpuctxsw=none",
        "--cuda-graph-trace=node",
        "--capture-range=cudaProfilerApi",
        "--capture-range-end=stop",
        "--force-overwrite=true",
        "-o",
        str(tmp_path / "trace"),
        "python",
        "-m",
        "w",
    ]
    assert "NSYS_NVTX_PROFILER_REGISTER_ONLY" not in nsys.profile_env("cuda", {})


def test_profile_command_cpu(tmp_path: Path) -> None:
    cmd = nsys.profile_command(Path("/x/nsys"), tmp_path / "trace", ["python"], "cpu")
    assert cmd[2:8] == [
        "--trace=nvtx,osrt",
        "--sample=none",
        "--cpuctxsw=none",
        "--capture-range=nvtx",
        "--nvtx-capture=capture@dsocr",
        "--capture-range-end=stop",
    ]
    assert nsys.profile_env("cpu", {"A": "1"}) == {"A": "1", "NSYS_NVTX_PROFILER_REGISTER_ONLY": "0"}


def test_export_command(tmp_path: Path) -> None:
    assert nsys.export_command(Path("/x/nsys"), tmp_path / "t.nsys-rep", tmp_path / "t.sqlite") == [
        "/x/nsys",
        "export",
        "--type=sqlite",
        "--force-overwrite=true",
        "--quiet=true",
        "-o",
        str(tmp_path / "t.sqlite"),
        str(tmp_path / "t.nsys-rep"),
    ]


def test_cuda_event_trace_off_where_nsys_knows_it(tmp_path: Path) -> None:
    fake = tmp_path / "nsys"
    fake.write_text(
        "#!/bin/sh\necho 'usage: nsys profile [<args>]'\n"
        "echo '   --cuda-event-trace=    Possible values are true or false.'\n"
        "echo '   --cuda-graph-trace=    graph or node'\n"
    )
    fake.chmod(0o755)
    opts = nsys.profile_options(fake)
    assert {"--cuda-event-trace", "--cuda-graph-trace"} <= opts
    cmd = nsys.profile_command(fake, tmp_path / "t", ["python"], "cuda", opts)
    assert cmd[cmd.index("--capture-range-end=stop") + 1] == "--cuda-event-trace=false"
    # an nsys without the option (Debian's 2023.4) gets none; the CPU capture never does
    assert "--cuda-event-trace=false" not in nsys.profile_command(fake, tmp_path / "t", ["python"], "cuda")
    assert "--cuda-event-trace=false" not in nsys.profile_command(fake, tmp_path / "t", ["python"], "cpu", opts)
    assert nsys.profile_options(tmp_path / "missing") == frozenset()
