"""The runtime policy (:class:`dsocr.analyze.policy.RuntimePolicy`): small vs large decided once from the
inputs, and each setting applied where it belongs (allocator before polars loads, engine, early reads, trim)."""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze import analysis, load, pipeline, policy
from dsocr.analyze.policy import RuntimePolicy

REPO = Path(__file__).resolve().parents[1]


def _file(path: Path, size: int) -> Path:
    path.write_bytes(b"x" * size)
    return path


def test_small_and_large_by_the_total_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "SMALL_TRACE_BYTES", 1500)
    a = _file(tmp_path / "a.sqlite", 1000)
    small = RuntimePolicy.for_inputs([a], environ={})
    assert small == RuntimePolicy(1000, True, policy.SMALL_MALLOC_CONF, True, a, False)
    both = RuntimePolicy.for_inputs([a, _file(tmp_path / "b.sqlite", 1000)], environ={})
    assert both == RuntimePolicy(2000, False, policy.LEAN_MALLOC_CONF, False, None, True)


def test_no_input_is_the_bundled_sample_a_small_trace() -> None:
    got = RuntimePolicy.for_inputs([], environ={})
    assert got.small and got.in_memory_engine and got.early_read is None and not got.trim_heap


def test_run_directory_counts_its_trace_and_reads_it_early(tmp_path: Path) -> None:
    trace = _file(tmp_path / "trace.sqlite", 700)
    got = RuntimePolicy.for_inputs([tmp_path], environ={})
    assert (got.input_bytes, got.early_read) == (700, trace)


def test_xz_counts_decompressed_and_is_not_read_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3000) + bytes(200_000)  # compresses to far less than its size
    xz = tmp_path / "t.sqlite.xz"
    xz.write_bytes(lzma.compress(data))
    assert xz.stat().st_size < 10_000
    assert policy.xz_uncompressed_bytes(xz) == len(data)
    monkeypatch.setattr(policy, "SMALL_TRACE_BYTES", 100_000)
    got = RuntimePolicy.for_inputs([xz], environ={})
    assert (got.input_bytes, got.small, got.early_read) == (len(data), False, None)
    not_xz = _file(tmp_path / "bad.sqlite.xz", 50)
    assert policy.xz_uncompressed_bytes(not_xz) is None
    assert RuntimePolicy.for_inputs([not_xz], environ={}).input_bytes == 50  # its own size then


def test_parquet_directory_and_a_users_engine_keep_polars_default(tmp_path: Path) -> None:
    _file(tmp_path / "KERNEL.parquet", 10)
    assert not RuntimePolicy.for_inputs([tmp_path], environ={}).in_memory_engine
    f = _file(tmp_path / "a.sqlite", 10)
    assert not RuntimePolicy.for_inputs([f], environ={policy.ENGINE_VAR: "streaming"}).in_memory_engine


def _affinity_inside(p: RuntimePolicy) -> str | None:
    with pipeline.polars_engine(p):
        return os.environ.get(policy.ENGINE_VAR)


def test_engine_setting_applied_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(policy.ENGINE_VAR, raising=False)
    f = _file(tmp_path / "a.sqlite", 10)
    assert _affinity_inside(RuntimePolicy.for_inputs([f])) == "in-memory"
    assert os.environ.get(policy.ENGINE_VAR) is None
    assert _affinity_inside(RuntimePolicy.for_inputs([f, tmp_path])) is None
    monkeypatch.setenv(policy.ENGINE_VAR, "streaming")
    assert _affinity_inside(RuntimePolicy.for_inputs([f], environ={})) == "streaming"  # the user's value stays


def test_run_analysis_uses_the_policy_engine(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(policy.ENGINE_VAR, raising=False)
    seen: list[str | None] = []
    original = pipeline._analyze_all

    def spy(*args: object, **kwargs: object) -> analysis.Analysis:
        seen.append(os.environ.get(policy.ENGINE_VAR))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_analyze_all", spy)
    result = pipeline.run_analysis([h100_sqlite])
    large = RuntimePolicy(1 << 40, False, policy.LEAN_MALLOC_CONF, False, None, True)
    pipeline.run_analysis([h100_sqlite], policy=large)
    assert seen == ["in-memory", None]
    assert os.environ.get(policy.ENGINE_VAR) is None
    assert isinstance(result.stages, pl.DataFrame) and result.stages.height == 3


def test_c_heap_trimmed_when_the_policy_says(cpu_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(load, "trim_c_heap", lambda: calls.append(1))
    load.load_trace(cpu_sqlite)
    assert calls == []  # a small file: its freed pages would only be faulted in again
    load.load_trace(cpu_sqlite, trim_heap=True)
    assert calls == [1, 1]  # after the reads and after loading
    monkeypatch.setattr(policy, "SMALL_TRACE_BYTES", cpu_sqlite.stat().st_size)
    load.load_trace(cpu_sqlite)  # the default: the policy for this file, now a large one
    assert calls == [1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------
# the allocator: set in one place, before polars is imported; a user's value wins

PROBE = (
    "import os, sys\n"
    "from dsocr.analyze.policy import RuntimePolicy\n"
    "p = RuntimePolicy.for_inputs([])\n"
    "if sys.argv[1] == 'late':\n"
    "    import polars\n"
    "print(p.apply_allocator(), os.environ.get('_RJEM_MALLOC_CONF'))\n"
)


def _probe(env_value: str | None, when: str = "early") -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    if env_value is not None:
        env["_RJEM_MALLOC_CONF"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, when], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_allocator_set_when_nothing_is_set() -> None:
    assert _probe(None) == f"True {policy.SMALL_MALLOC_CONF}"


def test_polars_own_default_inherited_from_a_parent_is_overridden() -> None:
    assert _probe(policy.POLARS_DEFAULT_MALLOC_CONF) == f"True {policy.SMALL_MALLOC_CONF}"


def test_a_users_allocator_value_wins() -> None:
    assert _probe("dirty_decay_ms:2") == "False dirty_decay_ms:2"


def test_too_late_once_polars_is_imported() -> None:
    # polars put its own default in when it loaded: the policy's value would have no effect
    assert _probe(None, "late") == f"False {policy.POLARS_DEFAULT_MALLOC_CONF}"


def test_analyze_sets_the_conf_by_input_size_before_polars_loads(cpu_sqlite: Path, tmp_path: Path) -> None:
    """A small trace is analyzed with one arena and polars' own decay times, a big one with the lean settings;
    polars found the value when it loaded (it puts its own defaults before it)."""
    code = (
        "import os, sys\n"
        "from dsocr.analyze import policy\n"
        "from dsocr.cli import main\n"
        "policy.SMALL_TRACE_BYTES = int(sys.argv[2])\n"
        "try:\n"
        "    main(['analyze', sys.argv[1], '--out', sys.argv[3], '-q', '-f', 'json'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(os.environ['_RJEM_MALLOC_CONF'])\n"
    )
    size = cpu_sqlite.stat().st_size
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "DSOCR_CACHE_DIR": str(tmp_path / "cache")}
    got = {}
    for name, threshold in (("small", size + 1), ("big", size)):
        run = [sys.executable, "-c", code, str(cpu_sqlite), str(threshold), str(tmp_path / name)]
        done = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        got[name] = done.stdout.strip().splitlines()[-1]
    assert got["small"] == f"{policy.POLARS_DEFAULT_MALLOC_CONF},{policy.SMALL_MALLOC_CONF}", got
    assert got["big"] == f"{policy.POLARS_DEFAULT_MALLOC_CONF},{policy.LEAN_MALLOC_CONF}", got
