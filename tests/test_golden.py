"""Golden snapshots: every file ``dsocr analyze`` writes for the bundled sample, pinned.

The references live in ``tests/golden/sample/``; ``pytest --update-golden`` rewrites them (DEVELOPERS.md).
``analysis.json`` is kept pretty-printed for readable diffs, with the SHA-256 of the written bytes beside it;
``results.sqlite`` as one text dump per table (``results/<table>.txt``: schema and sorted rows; tables above
``FULL_ROWS`` rows as row count, per-column digests and the first sorted rows).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dsocr
from dsocr.analyze.input_files import sample_trace

GOLDEN = Path(__file__).parent / "golden" / "sample"
FULL_ROWS = 1000  # tables with more rows are dumped as digests plus an excerpt
EXCERPT_ROWS = 100
DIFF_LINES = 60


def normalize(text: str, *, sample: Path, cache: Path, out: Path) -> str:
    """Replace what differs between checkouts and machines: the only volatile parts of the outputs.

    - the bundled sample's absolute directory (where the package lies) -> ``<SAMPLE>``
    - the cache of decompressed traces (``DSOCR_CACHE_DIR``, the sample's ``trace.sqlite``) -> ``<CACHE>``
    - the output directory -> ``<OUT>`` (not written today; listed so that it never leaks in)

    Nothing else is volatile today (checked by running twice into different directories): the outputs carry
    no running dsocr version, clock time or duration of the analysis; the ``dsocr_version``, timestamps and
    host paths in them are the sample's own capture-time manifest, i.e. input, and stay pinned.
    """
    for path, token in sorted(
        ((sample, "<SAMPLE>"), (cache, "<CACHE>"), (out, "<OUT>")), key=lambda p: -len(str(p[0]))
    ):
        text = text.replace(str(path), token)
    return text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _table_dump(con: sqlite3.Connection, table: str, schema: str) -> str:
    """One table as text: its CREATE statement, column names and rows (``repr`` values, sorted)."""
    cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    rows = sorted(con.execute(f'SELECT * FROM "{table}"').fetchall(), key=lambda r: [repr(v) for v in r])
    lines = ["\t".join(repr(v) for v in row) for row in rows]
    head = [schema, "", "\t".join(cols)]
    if len(rows) <= FULL_ROWS:
        return "\n".join([*head, *lines]) + "\n"
    digests = [f"{c}\t{_digest(chr(10).join(repr(r[i]) for r in rows))}" for i, c in enumerate(cols)]
    return (
        "\n".join(
            [
                *head,
                f"-- {len(rows)} rows; sha256 per column over the sorted rows:",
                *digests,
                f"-- first {EXCERPT_ROWS} sorted rows:",
                *lines[:EXCERPT_ROWS],
            ]
        )
        + "\n"
    )


def snapshot(out: Path, *, sample: Path, cache: Path) -> dict[str, str]:
    """The normalized golden files (relative path -> text) of one output directory."""
    files: dict[str, str] = {}

    def norm(text: str) -> str:
        return normalize(text, sample=sample, cache=cache, out=out)

    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel == "analysis.json":
            raw = norm(path.read_text(encoding="utf-8"))
            files[rel] = json.dumps(json.loads(raw), indent=1, ensure_ascii=False) + "\n"
            files[rel + ".sha256"] = _digest(raw) + "\n"
        elif rel == "results.sqlite":
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                for table, schema in con.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
                ).fetchall():
                    files[f"results/{table}.txt"] = norm(_table_dump(con, table, schema))
                others = con.execute("SELECT sql FROM sqlite_master WHERE type != 'table' ORDER BY name").fetchall()
                if others:  # indexes, views, triggers: none today
                    files["results/_other_schema.txt"] = "".join(f"{sql}\n" for (sql,) in others)
            finally:
                con.close()
        else:
            files[rel] = norm(path.read_text(encoding="utf-8"))
    return files


def _golden_files() -> Iterator[tuple[str, Path]]:
    for path in sorted(p for p in GOLDEN.rglob("*") if p.is_file()):
        yield path.relative_to(GOLDEN).as_posix(), path


def _diff(changed: dict[str, tuple[str, str]]) -> str:
    """The unified diff of the changed files (golden -> now), cut after ``DIFF_LINES`` lines."""
    lines = [
        line
        for rel, (expected, actual) in changed.items()
        for line in difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True), f"golden/{rel}", f"now/{rel}"
        )
    ]
    more = f"... {len(lines) - DIFF_LINES} more diff lines\n" if len(lines) > DIFF_LINES else ""
    return "".join(lines[:DIFF_LINES]) + more


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``dsocr analyze`` (no argument: the bundled sample) in a fresh process, snapshotted."""
    base = tmp_path_factory.mktemp("golden")
    out, cache = base / "out", base / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSOCR_")}
    src = str(Path(dsocr.__file__).resolve().parents[1])  # the dsocr this test imports, also in the child
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env["DSOCR_CACHE_DIR"] = str(cache)
    res = subprocess.run(
        [sys.executable, "-m", "dsocr", "analyze", "--out", str(out)],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return snapshot(out, sample=sample_trace(), cache=cache)


@pytest.mark.slow
def test_sample_outputs_match_golden(sample_outputs: dict[str, str], request: pytest.FixtureRequest) -> None:
    if request.config.getoption("update_golden"):
        for _, old in _golden_files():
            old.unlink()
        for rel, text in sample_outputs.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text, encoding="utf-8")
        return
    golden = {rel: path.read_text(encoding="utf-8") for rel, path in _golden_files()}
    hint = "\n(if the change is intended: pytest tests/test_golden.py --update-golden, and say so in the commit)"
    assert sorted(sample_outputs) == sorted(golden), f"output files differ from tests/golden/sample{hint}"
    changed = {rel: (golden[rel], sample_outputs[rel]) for rel in golden if golden[rel] != sample_outputs[rel]}
    if list(changed) == ["analysis.json.sha256"]:
        hint = "\n(same JSON content, different bytes: its formatting changed)" + hint
    assert not changed, f"outputs differ from the golden snapshot in {list(changed)}:\n{_diff(changed)}{hint}"


def test_normalize_replaces_the_longest_path_first(tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    cache = sample / "cache"  # nested: the longer path must win
    text = f'"{cache}/x/trace.sqlite" "{sample}"'
    assert normalize(text, sample=sample, cache=cache, out=tmp_path / "o") == '"<CACHE>/x/trace.sqlite" "<SAMPLE>"'


def test_large_tables_are_dumped_as_digests(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "t.sqlite")
    con.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"r{i}") for i in range(FULL_ROWS + 1)])
    schema = "CREATE TABLE t (a INTEGER, b TEXT)"
    dump = _table_dump(con, "t", schema)
    assert f"-- {FULL_ROWS + 1} rows" in dump and len(dump.splitlines()) == 3 + 1 + 2 + 1 + EXCERPT_ROWS
    con.execute("UPDATE t SET b = 'changed' WHERE a = 999")  # '999' sorts last: beyond the excerpt
    changed = _table_dump(con, "t", schema)
    assert changed != dump
    assert [line for line in changed.splitlines() if line.startswith("a\t")] == [
        line for line in dump.splitlines() if line.startswith("a\t")
    ]
