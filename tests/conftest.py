"""Shared test fixtures: the real nsys exports in ../shared/fixtures, decompressed once."""

from __future__ import annotations

import lzma
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "nsys"
H100_DIR = FIXTURES / "h100-decoder-moe"
CPU_DIR = FIXTURES / "cpu-nvtx-2023"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the current outputs instead of comparing (tests/test_golden.py)",
    )


def in_ci() -> bool:
    """``CI`` is set to something other than empty, ``0``, ``false`` or ``no`` (CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_fixture(what: str) -> None:
    """Skip when a shared fixture is absent, except in CI (:func:`in_ci`), where that is a failure:
    the golden tests against NVIDIA's oracles must never pass by skipping."""
    message = f"shared fixture missing: {what} (expected ../shared next to the repository)"
    if in_ci():
        pytest.fail(f"{message}; CI is set, so this fails instead of skipping")
    pytest.skip(message)


def _decompress(src: Path, dst: Path) -> Path:
    if not dst.exists():
        tmp = dst.with_suffix(".part")
        with lzma.open(src) as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        tmp.rename(dst)
    return dst


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide directory for decompressed fixtures."""
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def h100_sqlite(fixture_cache: Path) -> Path:
    """The H100 decoder-MoE export (nsys 2025.3.2, schema 3.20.3), decompressed."""
    if not (H100_DIR / "trace.sqlite.xz").exists():
        missing_fixture(str(H100_DIR))
    return _decompress(H100_DIR / "trace.sqlite.xz", fixture_cache / "h100.sqlite")


@pytest.fixture(scope="session")
def cpu_sqlite(fixture_cache: Path) -> Path:
    """The CPU-only NVTX export (nsys 2023.4.4, schema 3.7.2), decompressed."""
    if not (CPU_DIR / "trace.sqlite.xz").exists():
        missing_fixture(str(CPU_DIR))
    return _decompress(CPU_DIR / "trace.sqlite.xz", fixture_cache / "cpu.sqlite")


def read_oracle(name: str) -> pl.DataFrame:
    """One of NVIDIA's report outputs for the H100 fixture (CSV, optionally xz)."""
    for candidate in (H100_DIR / f"{name}.csv", H100_DIR / f"{name}.csv.xz"):
        if candidate.exists():
            data = lzma.decompress(candidate.read_bytes()) if candidate.suffix == ".xz" else candidate.read_bytes()
            return pl.read_csv(data, infer_schema_length=None)
    missing_fixture(f"oracle {name} in {H100_DIR}")
    raise AssertionError("unreachable")
