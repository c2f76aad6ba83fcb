"""The lean allocator setting for big traces: set before polars loads, a user's own value wins."""

from __future__ import annotations

import subprocess
import sys

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
