"""The same fault gives the same exit code in every command (docs/exit-codes.md), as exactly one
``dsocr: error: ...`` line on stderr and no traceback; every registered command is covered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsocr.cli import _register_commands, main
from dsocr.cli.app import app
from dsocr.contract.errors import ExitCode

USAGE, NOT_FOUND, BAD_INPUT = ExitCode.USAGE, ExitCode.NOT_FOUND, ExitCode.BAD_INPUT


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A corpus of wrong things: a plain file, a directory, a binary file, broken JSON, a non-image."""
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "binary.json").write_bytes(b"\x00\x01\xff\xfe")
    (tmp_path / "bad.json").write_text('{"a":')
    (tmp_path / "notsqlite.sqlite").write_text("not an SQLite file\n")
    (tmp_path / "page.png").write_text("not an image\n")
    return tmp_path


#: (command, fault, argv with {F} the corpus directory and {T} a real trace, exit code)
FAULTS: list[tuple[str, str, list[str], int]] = [
    # --- usage (2): the command line itself is wrong
    *[
        (c, "unknown option", [c, "--no-such-option"], USAGE)
        for c in (
            "analyze",
            "diff",
            "model",
            "capture",
            "calibrate",
            "export",
            "pages",
            "doctor",
            "version",
            "generate",
        )
    ],
    *[
        (c, "extra argument", [c, "extra-word"], USAGE)
        for c in ("model", "capture", "calibrate", "pages", "doctor", "version", "generate")
    ],
    ("(none)", "unknown command", ["no-such-command"], USAGE),
    ("whatif", "unknown command", ["whatif", "no-such-command"], USAGE),
    ("whatif run", "unknown option", ["whatif", "run", "--no-such-option"], USAGE),
    ("whatif report", "unknown option", ["whatif", "report", "--no-such-option"], USAGE),
    ("whatif report", "missing argument", ["whatif", "report"], USAGE),
    ("whatif run", "bad value", ["whatif", "run", "--variant", "x=speed=fast", "--device", "cpu"], USAGE),
    ("whatif run", "bad value", ["whatif", "run", "--variant", "x=moe=fused", "--device", "cpu"], USAGE),
    ("whatif run", "bad value", ["whatif", "run", "--sweep-batch", "1,0", "--device", "cpu"], USAGE),
    (
        "whatif run",
        "duplicate variant names",
        [
            "whatif",
            "run",
            "--variant",
            "a=moe=grouped",
            "--variant",
            "a=attn=sdpa",
            "--device",
            "cpu",
            "--out",
            "{F}/wi",
        ],
        USAGE,
    ),
    (
        "whatif run",
        "--profile names no variant",
        ["whatif", "run", "--variant", "a=moe=grouped", "--profile", "b", "--device", "cpu", "--out", "{F}/wi"],
        USAGE,
    ),
    ("whatif run", "nothing to compare", ["whatif", "run", "--device", "cpu", "--out", "{F}/wi"], USAGE),
    ("whatif run", "--out names a file", ["whatif", "run", "--variant", "a=moe=grouped", "--out", "{F}/afile"], USAGE),
    ("whatif report", "bad value", ["whatif", "report", "{F}/adir", "--format", "pdf"], USAGE),
    ("whatif report", "--out names a file", ["whatif", "report", "{F}/adir", "--out", "{F}/afile"], USAGE),
    ("diff", "missing argument", ["diff"], USAGE),
    ("export", "missing argument", ["export"], USAGE),
    ("analyze", "bad value", ["analyze", "{T}", "--mode", "nope"], USAGE),
    ("analyze", "bad value", ["analyze", "{T}", "--format", "md,pdf"], USAGE),
    ("analyze", "value below its minimum", ["analyze", "{T}", "--max-new-tokens", "0"], USAGE),
    ("model", "bad value", ["model", "--mode", "nope"], USAGE),
    ("model", "conflicting options", ["model", "--crops", "2x2", "--image-size", "640x640"], USAGE),
    ("capture", "bad value", ["capture", "--mode", "nope"], USAGE),
    ("capture", "bad value", ["capture", "--device", "tpu"], USAGE),
    ("capture", "bad value", ["capture", "--devices", "0,x"], USAGE),
    ("capture", "bad value", ["capture", "--devices", "0,cpu"], USAGE),
    ("capture", "value below its minimum", ["capture", "--gpus", "0"], USAGE),
    ("capture", "conflicting options", ["capture", "--gpus", "2", "--devices", "0,1"], USAGE),
    ("capture", "conflicting options", ["capture", "--gpus", "2", "--device", "cpu"], USAGE),
    ("analyze", "bad value", ["analyze", "{T}", "--scheduler", "nowhere"], USAGE),
    ("calibrate", "bad value", ["calibrate", "--mode", "nope"], USAGE),
    ("generate", "bad value", ["generate", "--mode", "nope"], USAGE),
    ("generate", "value below its minimum", ["generate", "--max-new-tokens", "0"], USAGE),
    ("analyze", "--out names a file", ["analyze", "{T}", "--out", "{F}/afile"], USAGE),
    ("diff", "--out names a file", ["diff", "{F}/bad.json", "{F}/bad.json", "--out", "{F}/afile"], USAGE),
    ("pages", "--out names a file", ["pages", "--out", "{F}/afile"], USAGE),
    ("pages", "--out under a file", ["pages", "--out", "{F}/afile/pages"], USAGE),
    ("capture", "--out names a file", ["capture", "--out", "{F}/afile", "--device", "cpu"], USAGE),
    ("model", "--out names a directory", ["model", "--out", "{F}/adir"], USAGE),
    ("calibrate", "--out names a directory", ["calibrate", "--out", "{F}/adir", "--device", "cpu", "--smoke"], USAGE),
    ("model", "prefill longer than the model's window", ["model", "--prompt-tokens", "100000000"], USAGE),
    # impossible variants (docs/variants.md)
    ("capture", "bad value", ["capture", "--decode", "fast"], USAGE),
    ("capture", "bad value", ["capture", "--cuda-graph-trace", "kernel"], USAGE),
    ("capture", "value below its minimum", ["capture", "--batch", "0"], USAGE),
    ("capture", "graph decode with the MoE loop", ["capture", "--decode", "graph"], USAGE),
    ("capture", "compile decode with the MoE loop", ["capture", "--decode", "compile", "--moe", "loop"], USAGE),
    (
        "capture",
        "graph decode on the CPU",
        ["capture", "--decode", "graph", "--moe", "grouped", "--device", "cpu"],
        USAGE,
    ),
    (
        "capture",
        "graph decode with the checkpoint's code",
        ["capture", "--decode", "graph", "--moe", "grouped", "--trust-remote-code", "--model", "{F}/adir"],
        USAGE,
    ),
    ("capture", "flash attention in the replica", ["capture", "--attn", "flash_attention_2", "--device", "cpu"], USAGE),
    ("capture", "batch larger than the pages", ["capture", "--batch", "13", "--device", "cpu"], USAGE),
    ("generate", "bad value", ["generate", "--decode", "fast"], USAGE),
    ("generate", "graph decode with the MoE loop", ["generate", "--decode", "graph"], USAGE),
    (
        "generate",
        "graph decode on the CPU",
        ["generate", "--decode", "graph", "--moe", "grouped", "--device", "cpu"],
        USAGE,
    ),
    (
        "analyze",
        "prefill longer than the model's window",
        ["analyze", "{T}", "--prefill-tokens", "100000000", "--out", "{F}/out", "-f", "json"],
        USAGE,
    ),
    # --- missing input (3): an input path that does not exist
    ("analyze", "missing input", ["analyze", "{F}/missing.sqlite"], NOT_FOUND),
    ("analyze", "missing --calibration", ["analyze", "{T}", "--calibration", "{F}/missing.json"], NOT_FOUND),
    ("diff", "missing input", ["diff", "{F}/missing", "{F}/bad.json"], NOT_FOUND),
    ("export", "missing input", ["export", "{F}/missing"], NOT_FOUND),
    ("export", "run directory without its report", ["export", "{F}/adir"], NOT_FOUND),
    ("capture", "missing --pages", ["capture", "--pages", "{F}/missing.png", "--device", "cpu"], NOT_FOUND),
    (
        "calibrate",
        "missing --pages",
        ["calibrate", "--pages", "{F}/missing.png", "--device", "cpu", "--smoke"],
        NOT_FOUND,
    ),
    ("generate", "missing --page", ["generate", "--page", "{F}/missing.png", "--device", "cpu"], NOT_FOUND),
    ("generate", "missing --model", ["generate", "--model", "{F}/missing", "--device", "cpu"], NOT_FOUND),
    ("whatif report", "missing input", ["whatif", "report", "{F}/missing"], NOT_FOUND),
    ("analyze", "missing --whatif", ["analyze", "{T}", "--whatif", "{F}/missing", "--out", "{F}/o"], NOT_FOUND),
    # --- bad input (4): an input exists but is not what the command reads
    ("whatif report", "a directory without timing", ["whatif", "report", "{F}/adir"], BAD_INPUT),
    ("whatif report", "not a whatif.json", ["whatif", "report", "{F}/bad.json"], BAD_INPUT),
    ("analyze", "not an export", ["analyze", "{F}/notsqlite.sqlite"], BAD_INPUT),
    (
        "analyze",
        "binary --calibration",
        ["analyze", "{T}", "--calibration", "{F}/binary.json", "--out", "{F}/o"],
        BAD_INPUT,
    ),
    ("diff", "not an analysis.json", ["diff", "{F}/bad.json", "{F}/bad.json"], BAD_INPUT),
    ("generate", "--page not an image", ["generate", "--page", "{F}/page.png", "--device", "cpu"], BAD_INPUT),
    ("generate", "checkpoint dir without config", ["generate", "--model", "{F}/adir", "--device", "cpu"], BAD_INPUT),
    ("export", "not an .nsys-rep", ["export", "{F}/afile"], BAD_INPUT),
    ("capture", "--pages not an image", ["capture", "--pages", "{F}/page.png", "--device", "cpu"], BAD_INPUT),
    (
        "calibrate",
        "--pages not an image",
        ["calibrate", "--pages", "{F}/page.png", "--device", "cpu", "--smoke"],
        BAD_INPUT,
    ),
]


def _id(case: tuple[str, str, list[str], int]) -> str:
    return f"{case[0]}: {case[1]}: {' '.join(case[2][1:])}"


@pytest.mark.parametrize("case", FAULTS, ids=[_id(c) for c in FAULTS])
def test_fault_gives_one_line_and_its_code(
    case: tuple[str, str, list[str], int],
    files: Path,
    cpu_sqlite: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith("DSOCR_") and name != "DSOCR_NSYS_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DSOCR_CACHE_DIR", str(files / "cache"))
    _, _, argv, code = case
    args = [a.replace("{F}", str(files)).replace("{T}", str(cpu_sqlite)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("dsocr: warning: ")]
    assert exc.value.code == code, err
    assert len(lines) == 1 and lines[0].startswith("dsocr: error: "), err
    assert "Traceback" not in err


def test_every_command_is_covered() -> None:
    _register_commands()
    commands = {info.name or info.callback.__name__ for info in app.registered_commands if info.callback is not None}
    covered = {c for c, *_ in FAULTS}
    assert commands <= covered, commands - covered
