"""The allocator settings (lean for big traces, one arena for small ones): set before polars loads, a user's
own value wins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dsocr

PROBE = "import os, dsocr; took = dsocr.lean_allocator(); print(took, os.environ.get('_RJEM_MALLOC_CONF'))"


def _probe(env_value: str | None) -> str:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["_RJEM_MALLOC_CONF"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_set_when_nothing_is_set() -> None:
    assert _probe(None) == f"True {dsocr.LEAN_MALLOC_CONF}"


def test_polars_own_default_inherited_from_a_parent_is_overridden() -> None:
    # a parent that imported polars passes polars' default on: not a user's choice
    assert _probe(dsocr.POLARS_DEFAULT_MALLOC_CONF) == f"True {dsocr.LEAN_MALLOC_CONF}"


def test_a_users_value_wins() -> None:
    assert _probe("dirty_decay_ms:2") == "False dirty_decay_ms:2"


def test_another_conf_is_set_the_same_way() -> None:
    probe = "import os, dsocr; print(dsocr.lean_allocator(dsocr.SMALL_MALLOC_CONF), os.environ['_RJEM_MALLOC_CONF'])"
    out = subprocess.run([sys.executable, "-c", probe], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.strip() == "True narenas:1"


def test_analyze_picks_the_conf_by_input_size(cpu_sqlite: Path, tmp_path: Path) -> None:
    """A small trace is analyzed with one arena and polars' own decay times, a big one with the lean settings."""
    code = (
        "import os, sys\n"
        "from dsocr.cli import analyze, main\n"
        "analyze.LEAN_MEMORY_BYTES = int(sys.argv[2])\n"
        "try:\n"
        "    main(['analyze', sys.argv[1], '--out', sys.argv[3], '-q', '-f', 'json'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(os.environ['_RJEM_MALLOC_CONF'])\n"
    )
    size = cpu_sqlite.stat().st_size
    env = {"PATH": "/usr/bin:/bin", "DSOCR_CACHE_DIR": str(tmp_path / "cache")}
    got = {}
    for name, threshold in (("small", size + 1), ("big", size)):
        run = [sys.executable, "-c", code, str(cpu_sqlite), str(threshold), str(tmp_path / name)]
        done = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        got[name] = done.stdout.strip().splitlines()[-1]
    # polars puts its own defaults before the value it finds (later settings win)
    assert got["small"].endswith("," + dsocr.SMALL_MALLOC_CONF), got
    assert got["big"].endswith("," + dsocr.LEAN_MALLOC_CONF), got
