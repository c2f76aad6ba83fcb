"""Early reads of the largest tables (:mod:`dsocr.analyze.prefetch`): the loader takes exactly its own queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dsocr.analyze import load, prefetch
from dsocr.analyze.readers import SqliteSource


@pytest.fixture(autouse=True)
def _nothing_left() -> Iterator[None]:
    prefetch.discard()
    yield
    prefetch.discard()


def test_the_loader_takes_every_early_read_and_gets_the_same_frames(
    h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[bool] = []
    real_take = prefetch.take

    def spy(path: Path, sql: str) -> object:
        got = real_take(path, sql)
        taken.append(got is not None)
        return got

    source = SqliteSource(h100_sqlite)
    try:
        plain = {key: source.read(*load.table_requests()[key]) for key in prefetch.EARLY_READS}
        assert prefetch.start(h100_sqlite)
        assert len(prefetch._pending) == len(prefetch.EARLY_READS)
        monkeypatch.setattr(prefetch, "take", spy)
        early = {key: source.read(*load.table_requests()[key]) for key in prefetch.EARLY_READS}
    finally:
        source.close()
    assert taken == [True] * len(prefetch.EARLY_READS)
    assert not prefetch._pending
    for key, frame in plain.items():
        assert frame.height > 0
        assert early[key].equals(frame), key


def test_not_an_sqlite_file_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "x.sqlite").write_bytes(b"not sqlite at all")
    assert not prefetch.start(tmp_path / "x.sqlite")
    assert not prefetch.start(tmp_path / "missing.sqlite")
    assert not prefetch.start(tmp_path)
    assert not prefetch._pending


def test_unused_early_reads_are_dropped_by_the_load(h100_sqlite: Path, cpu_sqlite: Path) -> None:
    assert prefetch.start(h100_sqlite)
    trace = load.load_trace(cpu_sqlite)  # another file: nothing of it was read early
    assert trace.meta.has_nvtx
    assert not prefetch._pending


def test_an_early_read_connectorx_refused_is_read_with_sqlite3(
    h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(uri: str, sql: str) -> object:
        raise RuntimeError("Invalid column type Text")  # what connectorx raises for a column it cannot type

    monkeypatch.setattr(prefetch, "read_arrow", broken)
    assert prefetch.start(h100_sqlite)
    source = SqliteSource(h100_sqlite)
    try:
        frame = source.read(*load.table_requests()["runtime"])
    finally:
        source.close()
    assert frame.height == 167_731


def test_any_other_early_read_failure_is_not_hidden(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(uri: str, sql: str) -> object:
        raise ValueError("a bug in the early read")

    monkeypatch.setattr(prefetch, "read_arrow", bug)
    assert prefetch.start(h100_sqlite)
    source = SqliteSource(h100_sqlite)
    try:
        with pytest.raises(ValueError, match="a bug in the early read"):
            source.read(*load.table_requests()["runtime"])
    finally:
        source.close()


def test_a_read_not_started_yet_is_left_to_the_caller(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    go = threading.Event()
    real_read = prefetch.read_arrow

    def slow(uri: str, sql: str) -> object:
        go.wait(10)
        return real_read(uri, sql)

    monkeypatch.setattr(prefetch, "read_arrow", slow)
    assert prefetch.start(h100_sqlite)
    queries = [sql for _, sql in prefetch._pending]
    assert prefetch.take(h100_sqlite, queries[-1]) is None  # queued behind the first: dropped, not awaited
    assert len(prefetch._pending) == len(queries) - 1
    go.set()
    first = prefetch.take(h100_sqlite, queries[0])
    assert first is not None and first.num_rows > 0
