"""Start-up of ``dsocr analyze``: what is (not) imported, the direct command-line path, the template
cache and the pyarrow-free connectorx read. No timings: each guard checks structure or values."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import typer

from dsocr.cli import _direct
from dsocr.cli import analyze as analyze_cmd

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
NOT_FOR_ANALYZE = ("pyarrow", "numpy", "pydantic", "rich", "dsocr.report.plots", "typer._adapters")


def test_command_module_imports_no_analysis() -> None:
    """Importing the command (what every ``dsocr analyze`` start pays, --help included) loads no analysis,
    report, polars or rich."""
    out = _python(
        "import sys, json, dsocr.cli.analyze; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('polars', 'rich', 'pydantic', 'jinja2') "
        "or m.startswith(('dsocr.analyze', 'dsocr.report', 'dsocr.analytic')))))"
    )
    assert json.loads(out) == []


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


# ---------------------------------------------------------------------------------------------
# the direct path gives the command exactly the arguments typer gives it


def _typer_kwargs(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The arguments typer's own parsing hands to ``analyze`` (a spy with the same declarations)."""
    got: dict[str, Any] = {}

    @functools.wraps(analyze_cmd.analyze)
    def spy(**kwargs: Any) -> None:
        got.update(kwargs)

    app = typer.Typer(add_completion=False)
    app.command("analyze")(spy)

    @app.callback()
    def _root() -> None:
        pass

    for name in list(os.environ):
        if name.startswith("DSOCR_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app(args=argv, prog_name="dsocr", standalone_mode=False)
    return got


PLAIN = [
    (["analyze"], {}),
    (["analyze", "a.sqlite"], {}),
    (["analyze", "a.sqlite", "b.sqlite.xz", "--out", "o", "-q"], {}),
    (["analyze", "-o", "o dir", "a.sqlite", "--format=md,json", "--json"], {}),
    (["analyze", "a.sqlite", "-f", "html", "-v", "--full-projection"], {}),
    (["analyze", "a", "--mode", "gundam", "--crops", "2x3", "--prompt-tokens", "12", "--max-new-tokens", "5"], {}),
    (["analyze", "a", "--prefill-tokens", "4096", "--peak-tflops", "989.5", "--peak-tbps=3.35", "--gpu", "H100"], {}),
    (["analyze", "a", "--peak-tflops", "1e3", "--prompt-tokens", "0"], {}),
    (
        ["analyze", "a"],
        {"DSOCR_ANALYZE_OUT": "env-out", "DSOCR_ANALYZE_FORMAT": "md", "DSOCR_MODE": "tiny", "DSOCR_PEAK_TBPS": "2"},
    ),
    (["analyze", "a", "--out", "cli-out"], {"DSOCR_ANALYZE_OUT": "env-out", "DSOCR_PROMPT_TOKENS": "7"}),
    (["analyze", "a"], {"DSOCR_ANALYZE_OUT": "", "DSOCR_GPU": ""}),
]


@pytest.mark.parametrize(("argv", "env"), PLAIN)
def test_direct_arguments_equal_typers(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    want = _typer_kwargs(argv, env, monkeypatch)
    got = _direct.parse(analyze_cmd.analyze, argv[1:], env)
    assert got == want
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}


DECLINED = [
    (["--help"], {}),
    (["a", "-h"], {}),
    (["a", "--out", "x", "--out", "y"], {}),  # repeated
    (["a", "--no-such-option"], {}),
    (["a", "-qv"], {}),  # combined short flags
    (["a", "-ox"], {}),  # attached short value
    (["a", "--out"], {}),  # value missing
    (["a", "--gpu", "--quiet"], {}),  # an option where a value belongs
    (["a", "--quiet=1"], {}),
    (["a", "--prompt-tokens", "many"], {}),
    (["a", "--prompt-tokens", "-1"], {}),
    (["a", "--max-new-tokens", "0"], {}),  # below min=1
    (["a", "--peak-tflops", "0"], {}),  # refused by its callback
    (["a", "--peak-tflops", "inf"], {}),
    (["a", "--mode", "no-such-mode"], {}),
    (["a", "--", "b"], {}),
    (["a"], {"DSOCR_QUIET": "1"}),  # a bool option's variable: typer's bool parsing
    (["a"], {"DSOCR_PROMPT_TOKENS": "x"}),
]


@pytest.mark.parametrize(("argv", "env"), DECLINED)
def test_direct_declines_what_typer_must_handle(argv: list[str], env: dict[str, str]) -> None:
    # a deliberate decline: _Declined, or a callback's BadParameter; any other exception is a parser bug
    # (direct_call would hide it by returning NotImplemented too)
    with pytest.raises((_direct._Declined, typer.BadParameter)):
        _direct.parse(analyze_cmd.analyze, argv, env)
    commands = {"analyze": analyze_cmd.analyze}
    assert _direct.direct_call(["analyze", *argv], commands, env) is NotImplemented


def test_direct_only_for_direct_commands() -> None:
    def other(**kwargs: Any) -> str:
        return "called"

    assert _direct.direct_call(["other"], {"other": other}, {}) is NotImplemented
    assert _direct.direct_call([], {}, {}) is NotImplemented


def test_declined_line_gets_typers_error(capsys: pytest.CaptureFixture[str], cpu_sqlite: Path) -> None:
    from dsocr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(cpu_sqlite), "--max-new-tokens", "0"])
    assert exc.value.code == 2
    assert "--max-new-tokens" in capsys.readouterr().err


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
# connectorx without pyarrow


def test_connectorx_frames_equal_the_pyarrow_route(cpu_sqlite: Path) -> None:
    pytest.importorskip("pyarrow")
    import connectorx as cx

    from dsocr.analyze.readers import _connectorx_frame

    uri = "sqlite://" + urllib.parse.quote(str(cpu_sqlite))
    with sqlite3.connect(cpu_sqlite) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    compared = 0
    for table in tables:
        for sql in (f'SELECT * FROM "{table}"', f'SELECT * FROM "{table}" WHERE 0'):
            try:
                want = pl.from_arrow(cx.read_sql(uri, sql, return_type="arrow"))
            except Exception:
                continue  # connectorx cannot type this table: the reader falls back to sqlite3 for both
            got = _connectorx_frame(uri, sql)
            assert isinstance(want, pl.DataFrame)
            assert got.schema == want.schema, (table, sql)
            assert got.equals(want, null_equal=True), (table, sql)
            compared += 1
    assert compared > 20


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
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit handler ran', flush=True))\n"
        f"sys.argv = ['dsocr', 'analyze', {str(tmp_path / 'missing.sqlite')!r}]\n"
        "from dsocr.cli import main\n"
        "main()\n"
    )
    handled = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert handled.returncode == 3
    assert handled.stdout == "atexit handler ran\n"


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
