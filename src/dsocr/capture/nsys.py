"""Finding Nsight Systems' ``nsys``, checking its version, and building its command lines.

Search order (the first hit wins; :func:`candidates` lists them): ``--nsys PATH``, ``$NSYS``,
``$DSOCR_NSYS_HOME`` (the layout ``scripts/install-nsys.sh`` unpacks), ``PATH``,
``/opt/nvidia/nsight-systems/*/bin`` (newest first), ``/opt/nvidia/nsight-compute/*/host/
target-linux-x64`` (Nsight Compute ships a full nsys CLI there), ``/usr/local/cuda/bin``, and
last ``./.tools/nsys`` (the install script's default destination).

Known traps, each checked with a message that names the versions: nsys 2023.4 (Debian's
package) loses almost all kernel records of a CUDA 13 program, so a GPU capture needs nsys >=
2025.3 there (:data:`MIN_NSYS_FOR_CUDA`); nsys 2023.4 and 2024.2 drop the ranges of the ``nvtx``
package >= 0.2.12 (the driver checks the export).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from dsocr.contract import nvtx_names
from dsocr.contract.errors import EnvironmentProblem

#: Oldest nsys (year, release) known to record the kernels of a program built for a CUDA major.
MIN_NSYS_FOR_CUDA: Final[dict[int, tuple[int, int]]] = {11: (2020, 3), 12: (2022, 4), 13: (2025, 3)}
#: nsys up to this release silently drops the ranges of ``nvtx`` >= 0.2.12.
NSYS_DROPS_NEW_NVTX: Final = (2024, 2)
NVTX_NEW_API: Final = (0, 2, 12)

HOW_TO_GET: Final = (
    "install Nsight Systems >= 2025.3 (developer.nvidia.com/nsight-systems) or use the nsys inside Nsight Compute "
    "(/opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys), then pass --nsys PATH or set $NSYS"
)
HOW_TO_GET_CPU: Final = (
    "for --device cpu, `bash scripts/install-nsys.sh` unpacks Debian's 2023.4 (then set DSOCR_NSYS_HOME)"
)

_VERSION_RE: Final = re.compile(r"(?<![\d.])(20\d\d)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?")


@attrs.frozen(order=True)
class NsysVersion:
    """An Nsight Systems version such as 2023.4.4.54."""

    year: int
    release: int
    patch: int = 0
    build: int = 0

    def __str__(self) -> str:
        return f"{self.year}.{self.release}.{self.patch}"

    @property
    def full(self) -> str:
        """All four parts (``2023.4.4.54``)."""
        return f"{self}.{self.build}"

    @property
    def release_tuple(self) -> tuple[int, int]:
        """(year, release), e.g. (2023, 4)."""
        return (self.year, self.release)


@attrs.frozen
class Nsys:
    """The nsys a capture uses."""

    path: Path
    version: NsysVersion
    found_via: str  #: ``--nsys``, ``$NSYS``, ``$DSOCR_NSYS_HOME``, ``PATH``, or the directory searched

    def describe(self) -> str:
        """``nsys 2023.4.4 at /path (via PATH)``."""
        return f"nsys {self.version} at {self.path} (via {self.found_via})"


def parse_version(output: str) -> NsysVersion | None:
    """The version in ``nsys --version`` output (``NVIDIA Nsight Systems version 2025.3.2.474-...``)."""
    match = _VERSION_RE.search(output)
    if match is None:
        return None
    year, release, patch, build = match.groups()
    return NsysVersion(int(year), int(release), int(patch or 0), int(build or 0))


def _version_dirs(pattern_root: Path, glob: str) -> list[Path]:
    """Matches of ``glob`` under ``pattern_root``, newest version first."""
    if not pattern_root.is_dir():
        return []

    def key(p: Path) -> tuple[int, ...]:
        parts = re.findall(r"\d+", str(p.relative_to(pattern_root)))
        return tuple(int(x) for x in parts)

    return sorted(pattern_root.glob(glob), key=key, reverse=True)


def _in_home(home: Path) -> Iterator[Path]:
    """nsys inside an install-nsys.sh destination (or any directory holding bin/nsys)."""
    yield home / "bin" / "nsys"
    yield home / "nsys"
    yield from sorted(home.glob("usr/lib/*/nsight-systems/target-linux-x64/nsys"))
    yield from sorted(home.glob("**/target-linux-x64/nsys"))


def candidates(
    explicit: Path | None = None,
    env: Mapping[str, str] | None = None,
    opt_root: Path = Path("/opt/nvidia"),
    cuda_root: Path = Path("/usr/local/cuda"),
    cwd: Path | None = None,
) -> Iterator[tuple[Path, str]]:
    """Every place nsys may be, in search order, as (path, how it was found)."""
    env = os.environ if env is None else env
    if explicit is not None:
        yield (explicit / "nsys" if explicit.is_dir() else explicit), "--nsys"
        return
    if env.get("NSYS"):
        given = Path(env["NSYS"])
        yield (given / "nsys" if given.is_dir() else given), "$NSYS"
        return
    if env.get("DSOCR_NSYS_HOME"):
        for path in _in_home(Path(env["DSOCR_NSYS_HOME"])):
            yield path, "$DSOCR_NSYS_HOME"
    on_path = shutil.which("nsys", path=env.get("PATH", ""))
    if on_path:
        yield Path(on_path), "PATH"
    for path in _version_dirs(opt_root, "nsight-systems/*/bin/nsys"):
        yield path, str(path.parent)
    for path in _version_dirs(opt_root, "nsight-compute/*/host/target-linux-x64/nsys"):
        yield path, str(path.parent)
    yield cuda_root / "bin" / "nsys", str(cuda_root / "bin")
    for path in _in_home((cwd or Path.cwd()) / ".tools" / "nsys"):
        yield path, "./.tools/nsys"


def query_version(path: Path, timeout: float = 60.0) -> NsysVersion:
    """Run ``nsys --version``; raise EnvironmentProblem naming ``path`` if it does not answer."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"{path}: `nsys --version` failed ({exc}); {HOW_TO_GET}") from exc
    version = parse_version(done.stdout + done.stderr)
    if done.returncode != 0 or version is None:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise EnvironmentProblem(
            f"{path}: `nsys --version` gave exit code {done.returncode} and no version"
            f"{' (' + said[-1][:160] + ')' if said else ''}; {HOW_TO_GET}"
        )
    return version


def find(
    explicit: Path | None = None,
    env: Mapping[str, str] | None = None,
    opt_root: Path = Path("/opt/nvidia"),
    cuda_root: Path = Path("/usr/local/cuda"),
    cwd: Path | None = None,
) -> Nsys:
    """The first nsys in search order that runs and reports its version."""
    for path, via in candidates(explicit, env, opt_root, cuda_root, cwd):
        if via in ("--nsys", "$NSYS"):
            if not path.is_file():
                raise EnvironmentProblem(f"{path} (from {via}): no such nsys executable; {HOW_TO_GET}")
            if not os.access(path, os.X_OK):
                raise EnvironmentProblem(f"{path} (from {via}): not executable; chmod +x it or {HOW_TO_GET}")
            return Nsys(path=path, version=query_version(path), found_via=via)
        if path.is_file() and os.access(path, os.X_OK):
            return Nsys(path=path, version=query_version(path), found_via=via)
    raise EnvironmentProblem(
        "nsys not found (searched --nsys, $NSYS, $DSOCR_NSYS_HOME, PATH, /opt/nvidia/nsight-systems/*/bin, "
        f"/opt/nvidia/nsight-compute/*/host/target-linux-x64, /usr/local/cuda/bin, ./.tools/nsys); {HOW_TO_GET}; "
        f"{HOW_TO_GET_CPU}"
    )


def _cuda_major(cuda: str | None) -> int | None:
    if not cuda:
        return None
    match = re.match(r"\s*(\d+)", cuda)
    return int(match.group(1)) if match else None


def check_for_cuda(nsys: Nsys, cuda: str | None, what: str = "torch's CUDA") -> None:
    """Raise EnvironmentProblem if ``nsys`` is too old to record kernels of CUDA ``cuda`` programs."""
    major = _cuda_major(cuda)
    if major is None:
        return
    known = [m for m in MIN_NSYS_FOR_CUDA if m <= major]
    if not known:
        return
    minimum = MIN_NSYS_FOR_CUDA[max(known)]
    if nsys.version.release_tuple < minimum:
        raise EnvironmentProblem(
            f"{nsys.describe()} is too old for CUDA {cuda} programs ({what}): it loses their kernel records; "
            f"nsys >= {minimum[0]}.{minimum[1]} is needed: {HOW_TO_GET}"
        )


def drops_new_nvtx(nsys_version: NsysVersion, nvtx_version: str | None) -> bool:
    """Whether this nsys silently drops the ranges of this ``nvtx`` package version."""
    if nvtx_version is None:
        return False
    parts = tuple(int(x) for x in re.findall(r"\d+", nvtx_version)[:3])
    return parts >= NVTX_NEW_API and nsys_version.release_tuple <= NSYS_DROPS_NEW_NVTX


_OPTION_RE: Final = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]+)")


def profile_options(path: Path, timeout: float = 60.0) -> frozenset[str]:
    """The long options ``nsys profile --help`` lists (empty if it cannot say): feature detection."""
    try:
        done = subprocess.run(
            [str(path), "profile", "--help"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(_OPTION_RE.findall(done.stdout + done.stderr))


#: ``--cuda-graph-trace`` values nsys accepts and dsocr passes on (the first is the default).
CUDA_GRAPH_TRACES: Final = ("node", "graph")


def profile_command(
    nsys: Path,
    output: Path,
    program: Sequence[str],
    device: str,
    options: Collection[str] = (),
    cuda_graph_trace: str = "node",
) -> list[str]:
    """The ``nsys profile`` command line that runs ``program`` and writes ``output``.nsys-rep.

    ``options`` are the options this nsys knows (:func:`profile_options`): where it has
    ``--cuda-event-trace`` (2024 and later), CUDA event tracing is turned off: the worker times
    its stages with CUDA events, which one H100 experiment found ~20% costlier to run traced (later
    runs showed no difference beyond drift, docs/benchmarks.md); the trace loses nothing dsocr reads.

    On a GPU the capture range is the worker's ``cudaProfilerStart/Stop`` (``stop``: the default
    ``stop-shutdown`` would kill the worker at the stop, before it writes its timing). On the CPU
    there is no cudaProfilerStart: the capture range is the ``capture`` NVTX range of the ``dsocr``
    domain, which needs ``NSYS_NVTX_PROFILER_REGISTER_ONLY=0`` (:func:`profile_env`).

    ``cuda_graph_trace`` (:data:`CUDA_GRAPH_TRACES`, ``dsocr capture --cuda-graph-trace``): ``node`` traces every
    kernel of a replayed CUDA graph (the default), ``graph`` one range per graph launch (NVIDIA: cheaper).
    """
    if device == "cpu":
        flags = [
            "--trace=nvtx,osrt",
            "--sample=none",
            "--cpuctxsw=none",
            "--capture-range=nvtx",
            f"--nvtx-capture={nvtx_names.CAPTURE}@{nvtx_names.DOMAIN}",
            "--capture-range-end=stop",
        ]
    else:
        flags = [
            "--trace=cuda,nvtx",
            "--sample=none",
            "--cpuctxsw=none",
            f"--cuda-graph-trace={cuda_graph_trace}",
            "--capture-range=cudaProfilerApi",
            "--capture-range-end=stop",
        ]
        if "--cuda-event-trace" in options:
            flags.append("--cuda-event-trace=false")
    return [str(nsys), "profile", *flags, "--force-overwrite=true", "-o", str(output), *program]


def profile_env(device: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``nsys profile`` (``base`` defaults to this process's)."""
    env = dict(os.environ if base is None else base)
    if device == "cpu":
        env["NSYS_NVTX_PROFILER_REGISTER_ONLY"] = "0"
    return env


def export_command(nsys: Path, rep: Path, sqlite: Path) -> list[str]:
    """The ``nsys export`` command line that writes ``rep`` as SQLite to ``sqlite``."""
    return [
        str(nsys),
        "export",
        "--type=sqlite",
        "--force-overwrite=true",
        "--quiet=true",
        "-o",
        str(sqlite),
        str(rep),
    ]
