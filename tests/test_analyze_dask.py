"""``dsocr analyze --scheduler local``: the per-trace work on a Dask LocalCluster gives byte-identical
outputs to the one-process path (one trace and several); without the dask extra, one line and exit 5."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dsocr.cli import main
from dsocr.contract.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
HAS_DASK = importlib.util.find_spec("distributed") is not None
FORMATS = "json,md,sqlite,html"


def _analyze(out: Path, *args: str) -> dict[str, bytes]:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args, "--out", str(out), "--format", FORMATS, "--quiet"])
    assert exc.value.code == 0
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_without_the_extra_one_line_exit_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--scheduler", "local", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == ExitCode.ENVIRONMENT == 5
    assert err.count("\n") == 1 and 'pip install "dsocr[dask]"' in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DASK, reason='needs the dask extra (pip install "dsocr[dask]")')
def test_one_trace_is_byte_identical(tmp_path: Path) -> None:
    one = _analyze(tmp_path / "one")
    dask = _analyze(tmp_path / "dask", "--scheduler", "local")
    assert one.keys() == dask.keys() and one == dask


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DASK, reason='needs the dask extra (pip install "dsocr[dask]")')
def test_three_passes_are_byte_identical(tmp_path: Path, cpu_sqlite: Path) -> None:
    from make_multi_trace import shifted_copy

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"t{k}.sqlite")
        shifted_copy(cpu_sqlite, paths[-1], k * 1_000_000)
    args = [str(p) for p in paths]
    one = _analyze(tmp_path / "one", *args)
    dask = _analyze(tmp_path / "dask", *args, "--scheduler", "local")
    assert one.keys() == dask.keys() and one == dask


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DASK, reason='needs the dask extra (pip install "dsocr[dask]")')
def test_not_one_study_is_refused_the_same_way(
    tmp_path: Path, cpu_sqlite: Path, h100_sqlite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = []
    for extra in ([], ["--scheduler", "local"]):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", str(h100_sqlite), str(cpu_sqlite), "--out", str(tmp_path / "o"), "--quiet", *extra])
        errors.append((exc.value.code, capsys.readouterr().err))
    assert errors[0] == errors[1] and errors[0][0] == ExitCode.BAD_INPUT
