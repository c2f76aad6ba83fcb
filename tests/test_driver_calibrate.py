"""The capture's calibration step: when it runs and the command it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

from dsocr.capture.driver import CaptureSettings, calibrate_command
from dsocr.capture.worker_config import Shrink


def test_calibrates_on_gpu_runs_only_by_default() -> None:
    assert CaptureSettings(device="cuda").calibrates
    assert not CaptureSettings(device="cpu").calibrates
    assert CaptureSettings(device="cpu", calibrate=True).calibrates
    assert not CaptureSettings(device="cuda", calibrate=False).calibrates
    # shrunk test models have shapes the calibration would not match
    assert not CaptureSettings(device="cuda", shrink=Shrink(1, 1, 1)).calibrates


def test_calibrate_command_matches_the_capture_workload(tmp_path: Path) -> None:
    s = CaptureSettings(
        device="cuda:1",
        mode="base",
        crops="2x2",
        prompt_tokens=20,
        max_new_tokens=64,
        dtype="bf16",
        seed=7,
        pages=(Path("a.png"), Path("docs")),
    )
    cmd = calibrate_command(s, tmp_path / "calibration.json")
    assert cmd[:4] == [sys.executable, "-m", "dsocr", "calibrate"]
    args = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert cmd.count("--pages") == 2 and cmd[cmd.index("--pages") + 1] == "a.png"
    expected = {"--mode": "base", "--crops": "2x2", "--prompt-tokens": "20", "--max-new-tokens": "64"}
    assert {k: args[k] for k in expected} == expected
    assert cmd[-2:] == ["--out", str(tmp_path / "calibration.json")]
    assert "--quiet" in cmd and cmd[cmd.index("--device") + 1] == "cuda:1" and cmd[cmd.index("--seed") + 1] == "7"
    assert "--pages" not in calibrate_command(attrs.evolve(s, pages=()), tmp_path / "c.json")
