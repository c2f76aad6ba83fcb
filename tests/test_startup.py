"""Start-up of ``dsocr analyze``: what is (not) imported, the template cache, the connectorx read and the
end without teardown. No timings: each guard checks structure or values."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter on this checkout; its stdout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# modules a plain `dsocr analyze --format json,md,sqlite` must not import (html only, or not needed at all)
NOT_FOR_ANALYZE = ("rich", "dsocr.report.plots", "dsocr.capture", "dsocr.execution", "torch", "transformers")


def test_command_module_imports_no_analysis() -> None:
    """Importing the command (what every ``dsocr analyze`` start pays, --help included) loads no analysis,
    report, polars or rich: only the runtime policy, which must decide before polars is imported."""
    out = _python(
        "import sys, json, dsocr.cli.analyze; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('polars', 'rich', 'pydantic', 'jinja2', 'connectorx', 'pyarrow') "
        "or m.startswith(('dsocr.analyze', 'dsocr.report', 'dsocr.analytic')))))"
    )
    assert json.loads(out) == ["dsocr.analyze", "dsocr.analyze.policy"]


def test_plain_analyze_run_skips_html_pydantic_rich_pyarrow(cpu_sqlite: Path, tmp_path: Path) -> None:
    """A whole run without the html outputs: none of the modules only those (or nothing) need."""
    code = (
        "import sys, json\n"
        "from dsocr.cli import main\n"
        "try:\n"
        f"    main(['analyze', {str(cpu_sqlite)!r}, '--out', {str(tmp_path / 'out')!r}, '-q', "
        "'-f', 'json,md,sqlite'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({NOT_FOR_ANALYZE!r}))))\n"
    )
    out = _python(code, {"DSOCR_CACHE_DIR": str(tmp_path / "cache")})
    assert json.loads(out.strip().splitlines()[-1]) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["analysis.json", "report.md", "results.sqlite"]


def test_a_bad_value_is_one_usage_line(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path) -> None:
    from dsocr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(cpu_sqlite), "--max-new-tokens", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dsocr: error: dsocr analyze: Invalid value for '--max-new-tokens'")
    assert err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# compiled templates cached on disk


def test_templates_compiled_once_then_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import jinja2

    from dsocr.report import jinja

    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path))
    env = jinja.environment("test", autoescape=("html",), trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update({k: (lambda x, *a: x) for k in ("ms", "pct", "count", "si", "stat", "label", "short")})
    first = env.get_template("partials/style.css.j2").render()
    cached = sorted(p.name for p in tmp_path.glob("jinja2-*-test-*/*.cache"))
    assert len(cached) == 1

    def no_compile(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compiled again instead of loaded from the cache")

    again = jinja.environment("test", autoescape=("html",), trim_blocks=True, undefined=jinja2.StrictUndefined)
    monkeypatch.setattr(again, "compile", no_compile)
    assert again.get_template("partials/style.css.j2").render() == first
    # other options: another cache directory (the options shape the compiled code)
    other = jinja.environment("test", autoescape=False, trim_blocks=True, undefined=jinja2.StrictUndefined)
    assert other.bytecode_cache is not None
    assert other.bytecode_cache.directory != again.bytecode_cache.directory  # type: ignore[union-attr]


def test_unusable_cache_dir_renders_without_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dsocr.report import jinja

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(blocker / "cache"))
    env = jinja.environment("test", autoescape=False)
    assert env.bytecode_cache is None
    assert env.from_string("{{ 1 + 1 }}").render() == "2"


def test_unwritable_cache_entry_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dsocr.report import jinja

    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path))
    env = jinja.environment("test", autoescape=False)
    cache = env.bytecode_cache
    assert isinstance(cache, jinja.QuietBytecodeCache)
    cache.directory = str(tmp_path / "gone")  # a directory that vanished: dumping fails, rendering does not
    assert env.get_template("partials/style.css.j2").render()


# ---------------------------------------------------------------------------------------------
# connectorx's public Arrow read, sqlite3 for what connectorx cannot type


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as con:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_connectorx_frames_equal_sqlite3s(cpu_sqlite: Path) -> None:
    from dsocr.analyze.readers import SqliteSource

    source = SqliteSource(cpu_sqlite)
    compared = 0
    try:
        for table in _tables(cpu_sqlite):
            for sql in (f'SELECT * FROM "{table}"', f'SELECT * FROM "{table}" WHERE 0'):
                try:
                    got = source._read_connectorx(sql)
                except RuntimeError:
                    continue  # connectorx cannot type this table: the reader reads it with sqlite3
                want = source._read_sqlite3(sql)
                assert got.columns == want.columns, (table, sql)
                if want.height:
                    assert got.cast(want.schema).equals(want, null_equal=True), (table, sql)  # type: ignore[arg-type]
                compared += 1
    finally:
        source.close()
    assert compared > 20


def test_a_column_connectorx_cannot_type_is_read_with_sqlite3(tmp_path: Path) -> None:
    from dsocr.analyze.readers import SqliteSource

    path = tmp_path / "mixed.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        con.execute("INSERT INTO t VALUES (1, 'x'), ('not a number', 'y')")  # SQLite keeps per-value types
    source = SqliteSource(path)
    try:
        with pytest.raises(RuntimeError):
            source._read_connectorx('SELECT "a" FROM "t"')
        got = source.read("t", {"b": pl.String})
    finally:
        source.close()
    assert got["b"].to_list() == ["x", "y"]


def test_finish_skips_the_select_only_when_nothing_changes() -> None:
    from dsocr.analyze.readers import _finish

    df = pl.DataFrame({"a": [1, 2], "b": ["x", None]})
    assert _finish(df, {"a": pl.Int64, "b": pl.String}) is df
    narrowed = _finish(df, {"a": pl.Int32, "b": pl.String, "c": pl.Int64})
    assert narrowed.schema == pl.Schema({"a": pl.Int32, "b": pl.String, "c": pl.Int64})
    assert narrowed["c"].null_count() == 2
    assert _finish(df, {"b": pl.String, "a": pl.Int64}).columns == ["b", "a"]  # order as requested
    when = pl.DataFrame({"t": [1]}).with_columns(pl.col("t").cast(pl.Datetime("ns")))
    assert _finish(when, {"t": pl.Datetime}).dtypes == [pl.Datetime("us")]  # not fully given: cast as before


# ---------------------------------------------------------------------------------------------
# the command-line run ends without the interpreter's teardown, output complete


def test_quick_exit_keeps_output_codes_and_atexit(cpu_sqlite: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DSOCR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "dsocr", "analyze", str(cpu_sqlite), "-o", str(tmp_path / "o"), "-f", "json", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((tmp_path / "o" / "analysis.json").read_text())  # flushed whole
    failed = subprocess.run(
        [sys.executable, "-m", "dsocr", "analyze", str(tmp_path / "missing.sqlite")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert failed.returncode == 3
    assert failed.stderr.startswith("dsocr: error: ")
    code = (  # a handler registered after dsocr.cli was imported (by the command's imports or the command) runs
        "import atexit, sys\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        print('teardown', flush=True)\n"
        "kept = Teardown()  # freed by the interpreter's teardown, if there is one\n"
        f"missing = {str(tmp_path / 'missing.sqlite')!r}\n"
        "from_command_line = len(sys.argv) == 1\n"
        "sys.argv = ['dsocr', 'analyze', missing]\n"
        "from dsocr.cli import main\n"
        "atexit.register(lambda: print('atexit handler ran', flush=True))\n"
        "main(None if from_command_line else ['analyze', missing])\n"
    )
    quick = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert (quick.returncode, quick.stdout) == (3, "atexit handler ran\n")
    # argv given (a program calling main): the usual exit, teardown included
    normal = subprocess.run([sys.executable, "-c", code, "x"], capture_output=True, text=True, env=env, check=False)
    assert (normal.returncode, normal.stdout) == (3, "atexit handler ran\nteardown\n")


def test_cache_dir_others_can_write_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dsocr.report import jinja

    monkeypatch.setenv("DSOCR_CACHE_DIR", str(tmp_path))
    env = jinja.environment("test", autoescape=False)
    assert env.bytecode_cache is not None
    directory = Path(env.bytecode_cache.directory)  # type: ignore[attr-defined]
    directory.chmod(0o777)  # anyone could plant compiled code there
    assert jinja.environment("test", autoescape=False).bytecode_cache is None
    directory.chmod(0o700)
    assert jinja.environment("test", autoescape=False).bytecode_cache is not None
