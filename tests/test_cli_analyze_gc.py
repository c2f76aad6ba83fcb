"""``dsocr analyze`` runs with Python's cyclic garbage collector off, and leaves it as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsocr.analyze import pipeline
from dsocr.cli import main


@pytest.fixture
def gc_on() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.enable()
    yield
    if not was_on:
        gc.disable()


def _run(argv: list[str]) -> object:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_off_during_the_analysis_on_again_after(
    gc_on: None, cpu_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = pipeline.run_analysis

    def spy(*args: object, **kwargs: object) -> pipeline.Analysis:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_analysis", spy)
    assert _run(["analyze", str(cpu_sqlite), "--out", str(tmp_path / "out"), "-q", "-f", "json"]) == 0
    assert seen == [False]
    assert gc.isenabled()
    assert (tmp_path / "out" / "analysis.json").is_file()


def test_on_again_after_an_error(gc_on: None, tmp_path: Path) -> None:
    assert _run(["analyze", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "out"), "-q"]) != 0
    assert gc.isenabled()


def test_left_off_when_it_was_off(gc_on: None, cpu_sqlite: Path, tmp_path: Path) -> None:
    gc.disable()
    assert _run(["analyze", str(cpu_sqlite), "--out", str(tmp_path / "out"), "-q", "-f", "json"]) == 0
    assert not gc.isenabled()
