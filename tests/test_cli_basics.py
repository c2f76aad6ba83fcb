"""The CLI's own contract: unknown commands are usage errors, version prints."""

from __future__ import annotations

import subprocess
import sys

import dsocr


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dsocr", *args], capture_output=True, text=True, check=False)


def test_version_prints_package_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dsocr {dsocr.__version__}"


def test_unknown_command_is_usage_error() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "No such command 'no-such-command'" in result.stderr
