"""Debian's nsys as unpacked by scripts/install-nsys.sh, and scripts/nvidia-oracle.sh.

Skipped with a reason when the unpacked package is absent (run `bash scripts/install-nsys.sh`,
or set DSOCR_NSYS_HOME).
"""

from __future__ import annotations

import lzma
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import H100_DIR, missing_fixture

REPO = Path(__file__).resolve().parents[1]
ORACLE_DIR = H100_DIR
NSYS_HOME = Path(os.environ.get("DSOCR_NSYS_HOME", REPO / ".tools" / "nsys"))
TARGET = NSYS_HOME / "usr" / "lib" / "x86_64-linux-gnu" / "nsight-systems" / "target-linux-x64"

pytestmark = [
    pytest.mark.nsys,
    pytest.mark.skipif(
        not (TARGET / "nsys").exists(),
        reason=f"Debian's nsys not unpacked at {NSYS_HOME} (run `bash scripts/install-nsys.sh` or set DSOCR_NSYS_HOME)",
    ),
]


def _oracle_bytes(name: str) -> bytes:
    plain, packed = ORACLE_DIR / f"{name}.csv", ORACLE_DIR / f"{name}.csv.xz"
    if plain.exists():
        return plain.read_bytes()
    if packed.exists():
        return lzma.decompress(packed.read_bytes())
    missing_fixture(f"oracle {name} in {ORACLE_DIR}")
    raise AssertionError("unreachable")


def _oracle(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DSOCR_NSYS_HOME": str(NSYS_HOME)}
    return subprocess.run(["bash", str(REPO / "scripts" / "nvidia-oracle.sh"), *args], capture_output=True, env=env)


def test_nsys_version() -> None:
    out = subprocess.run([str(TARGET / "nsys"), "--version"], capture_output=True, text=True, check=True)
    assert "2023.4.4" in out.stdout


@pytest.mark.parametrize(
    "report", ["nvtx_gpu_proj_sum", "cuda_gpu_kern_sum", "nvtx_sum", "nvtx_kern_sum", "cuda_api_sum"]
)
def test_oracle_reproduces_fixture_reports(h100_sqlite: Path, report: str) -> None:
    out = _oracle(str(h100_sqlite), report)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == _oracle_bytes(report)


def test_oracle_several_reports_are_headed(h100_sqlite: Path) -> None:
    out = _oracle(str(h100_sqlite), "cuda_gpu_kern_sum", "cuda_api_sum")
    assert out.returncode == 0, out.stderr.decode()
    expected = b"# cuda_gpu_kern_sum\n" + _oracle_bytes("cuda_gpu_kern_sum")
    expected += b"# cuda_api_sum\n" + _oracle_bytes("cuda_api_sum")
    assert out.stdout == expected


def test_oracle_bad_inputs(tmp_path: Path, h100_sqlite: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    out = _oracle(str(missing), "cuda_gpu_kern_sum")
    assert out.returncode == 2
    assert f"nvidia-oracle: {missing}: no such file" in out.stderr.decode()
    out = _oracle(str(h100_sqlite), "no_such_report")
    assert out.returncode == 2
    assert "no report script no_such_report.py" in out.stderr.decode()
    out = _oracle(str(h100_sqlite))
    assert out.returncode == 2
    assert "usage:" in out.stderr.decode()


PROGRAM = """
import time, nvtx
def busy(s):
    t = time.perf_counter()
    while time.perf_counter() - t < s:
        pass
with nvtx.annotate("prefill", domain="dsocr"):
    busy(0.02)
with nvtx.annotate("decode", domain="dsocr"):
    for i in range(3):
        with nvtx.annotate("decode_step", domain="dsocr", payload=i):
            busy(0.005)
"""


def test_cpu_capture_records_nvtx_ranges(tmp_path: Path) -> None:
    """A CPU-only capture with nvtx 0.2.11 and nsys 2023.4 keeps the ranges (importer linked)."""
    pytest.importorskip("nvtx")
    (tmp_path / "prog.py").write_text(PROGRAM)
    nsys = str(TARGET / "nsys")
    flags = ["--trace=nvtx,osrt", "--sample=none", "--cpuctxsw=none", "-o", "p", "-f", "true"]
    subprocess.run([nsys, "profile", *flags, sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, check=True)
    assert (tmp_path / "p.nsys-rep").exists(), "nsys left no .nsys-rep: QdstrmImporter not found (host-linux-x64 link)"
    subprocess.run(
        [nsys, "export", "--type", "sqlite", "-o", "p.sqlite", "p.nsys-rep"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    with sqlite3.connect(tmp_path / "p.sqlite") as con:
        rows = con.execute(
            "SELECT coalesce(e.text, s.value), e.int64Value FROM NVTX_EVENTS e LEFT JOIN StringIds s ON s.id = e.textId"
            " WHERE e.eventType = 59 ORDER BY e.start"
        ).fetchall()
        schema = con.execute("SELECT value FROM META_DATA_EXPORT WHERE name = 'EXPORT_SCHEMA_VERSION'").fetchone()
    assert rows == [("prefill", None), ("decode", None), ("decode_step", 0), ("decode_step", 1), ("decode_step", 2)]
    assert schema == ("3.7.2",)
