"""Which polars engine ``run_analysis`` uses: in-memory for small traces, polars' default otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze import pipeline


def _affinity_inside(resolved: list[Path]) -> str | None:
    with pipeline.polars_engine(resolved):
        return os.environ.get("POLARS_ENGINE_AFFINITY")


def test_small_files_run_in_memory_and_the_setting_is_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLARS_ENGINE_AFFINITY", raising=False)
    small = tmp_path / "a.sqlite"
    small.write_bytes(b"x" * 1000)
    assert _affinity_inside([small, small]) == "in-memory"
    assert os.environ.get("POLARS_ENGINE_AFFINITY") is None


def test_large_files_directories_and_a_user_setting_keep_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLARS_ENGINE_AFFINITY", raising=False)
    small = tmp_path / "a.sqlite"
    small.write_bytes(b"x" * 1000)
    monkeypatch.setattr(pipeline, "IN_MEMORY_ENGINE_BYTES", 1500)
    assert _affinity_inside([small]) == "in-memory"
    assert _affinity_inside([small, small]) is None  # 2,000 bytes together
    assert _affinity_inside([tmp_path]) is None  # a parquet export directory
    monkeypatch.setenv("POLARS_ENGINE_AFFINITY", "streaming")
    assert _affinity_inside([small]) == "streaming"


def test_run_analysis_leaves_the_engine_setting_as_it_was(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLARS_ENGINE_AFFINITY", raising=False)
    seen: list[str | None] = []
    original = pipeline._analyze_all

    def spy(*args: object, **kwargs: object) -> pipeline.Analysis:
        seen.append(os.environ.get("POLARS_ENGINE_AFFINITY"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_analyze_all", spy)
    result = pipeline.run_analysis([h100_sqlite])
    assert seen == ["in-memory"]
    assert os.environ.get("POLARS_ENGINE_AFFINITY") is None
    assert result.stages.height == 3
    assert isinstance(result.stages, pl.DataFrame)
