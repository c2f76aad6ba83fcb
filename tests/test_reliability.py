"""The bad-input corpus (tests/badinputs.py) against the real command line, each case in its own process.

Every case must end with the documented exit code and its one line (the last on stderr, the only
error line; progress notes may come before it), no traceback, its inputs
unchanged, no temp or part file left, nothing in the cache after a bad ``.xz``, and no hang (the
timeout below is reached only by a hang). docs/reliability.md lists the same cases.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from badinputs import CORPUS, Case, leftovers, snapshot_dir
from dsocr.contract.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
#: Only a hang reaches this (every case ends in seconds).
HANG_S = 300


def _limit(fsize: int | None) -> None:
    if fsize is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def _without_root() -> list[str] | None:
    """A command prefix that drops root's power over file permissions (a user namespace), None if there is none."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-U", "true"], capture_output=True, check=False).returncode:
        return None
    return [unshare, "-U"]


def _run(case: Case, tmp: Path, prefix: list[str]) -> tuple[int, str, str, dict[Path, bytes]]:
    setup = case.build(tmp)
    before = {p: p.read_bytes() for p in setup.unchanged}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "DSOCR_CACHE_DIR": str(tmp / "cache"),
        "NO_COLOR": "1",
        **dict(setup.env),
    }
    env.pop("DSOCR_VERBOSE", None)
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "dsocr", *setup.argv],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _limit(setup.fsize),
    )
    if setup.interrupt is not None:
        sig, when = setup.interrupt
        deadline = time.monotonic() + HANG_S
        while not when.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{case.name}: dsocr {' '.join(setup.argv)} hung (no end after {HANG_S} s)")
    for path, data in before.items():
        assert path.read_bytes() == data, f"{case.name}: {path} was changed"
    for directory in setup.tidy:
        assert not leftovers(directory), f"{case.name}: left {leftovers(directory)}"
    for directory in setup.empty:
        assert not snapshot_dir(directory), f"{case.name}: left {snapshot_dir(directory)} in the cache"
    for text in setup.absent:
        assert text not in out + err, f"{case.name}: {text!r} printed"
    return proc.returncode, out, err, before


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_bad_input_ends_cleanly(case: Case, tmp_path: Path) -> None:
    prefix: list[str] | None = []
    if case.needs_non_root:
        prefix = _without_root()
        if prefix is None:
            pytest.skip("root ignores file permissions (and no user namespace here to run without them)")
    try:
        code, out, err, _ = _run(case, tmp_path, prefix)
    finally:
        for path in tmp_path.iterdir():  # a locked directory back to normal, so that it can be removed
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == case.code, f"{case.name}: exit code {code}, expected {case.code}: {err}"
    if case.code == ExitCode.OK:
        warned = [line for line in lines if line.startswith("dsocr: warning: ") and case.line in line]
        assert len(warned) == 1, f"{case.name}: no single warning with {case.line!r}: {err}"
    else:
        prefix = "dsocr: interrupted" if case.code == ExitCode.INTERRUPTED else "dsocr: error: "
        ended = [line for line in lines if line.startswith(("dsocr: error", "dsocr: interrupted"))]
        assert ended == lines[-1:], f"{case.name}: does not end with one error line: {err}"
        assert lines[-1].startswith(prefix) and case.line in lines[-1], f"{case.name}: {lines[-1]!r}"
        assert not out.strip(), f"{case.name}: printed a result: {out}"


def test_docs_list_every_case() -> None:
    """docs/reliability.md has one row per corpus case, with its exit code."""
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    for case in CORPUS:
        row = re.search(rf"^\| `{re.escape(case.name)}` \|.*\| {int(case.code)} \|$", text, re.MULTILINE)
        assert row, f"docs/reliability.md lacks the row of {case.name} (exit code {int(case.code)})"
