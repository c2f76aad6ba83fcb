"""CLI conventions (issue 6), checked on every registered command by introspecting the typer app.

- every option can also come from a ``DSOCR_*`` environment variable, shown in ``--help``;
- an option that means the same in every command that has it (the workload, the GPU, the tools,
  the shared flags) uses ``DSOCR_<OPTION>``: ``--max-new-tokens`` is ``DSOCR_MAX_NEW_TOKENS`` for
  capture, model and analyze alike, ``--nsys`` is ``DSOCR_NSYS`` for capture, export and doctor;
- an option whose meaning depends on the command (``--out``, ``--format``, ``--depth``) or whose
  name is a command's (``--pages``, ``--model``) uses ``DSOCR_<COMMAND>_<OPTION>``;
- old names (``DSOCR_CAPTURE_MODE``, ``DSOCR_EXPORT_NSYS``, ...) still work for their command,
  with a warning, but ``--help`` shows only the convention's name;
- ``--quiet`` prints nothing but errors and warnings, ``--json`` only JSON on stdout, ``--verbose``
  adds detail and tracebacks of internal errors; Ctrl-C is one line, ``dsocr: interrupted``, exit 130;
- ``--help`` output carries no colour codes when stdout is not a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperCommand, TyperGroup, TyperOption

from dsocr.cli import _register_commands, main
from dsocr.cli.app import app
from dsocr.cli.common import LEGACY_ENVVARS, PER_COMMAND_OPTIONS, apply_legacy_envvars
from dsocr.contract.errors import ExitCode

#: A registered command as typer builds it (public typer classes only).
Command = TyperCommand | TyperGroup

_register_commands()
ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)

#: Commands that must have --quiet and --verbose, and those that must have --json.
NEEDS_QUIET_VERBOSE = {"analyze", "capture", "diff", "doctor", "export", "model", "pages"}
NEEDS_JSON = {"analyze", "capture", "diff", "doctor", "export", "model", "pages"}

#: Options named DSOCR_<COMMAND>_<OPTION> (the rest are DSOCR_<OPTION>).
PER_COMMAND = {"--out", "--format", "--depth", "--pages", "--model", "--attn"}

#: The convention, spelled out for the options that several commands share or that it singles out.
EXPECTED = {
    # one meaning everywhere: one variable
    ("capture", "--mode"): "DSOCR_MODE",
    ("model", "--mode"): "DSOCR_MODE",
    ("analyze", "--mode"): "DSOCR_MODE",
    ("capture", "--crops"): "DSOCR_CROPS",
    ("model", "--crops"): "DSOCR_CROPS",
    ("analyze", "--crops"): "DSOCR_CROPS",
    ("capture", "--prompt-tokens"): "DSOCR_PROMPT_TOKENS",
    ("model", "--prompt-tokens"): "DSOCR_PROMPT_TOKENS",
    ("analyze", "--prompt-tokens"): "DSOCR_PROMPT_TOKENS",
    ("capture", "--max-new-tokens"): "DSOCR_MAX_NEW_TOKENS",
    ("model", "--max-new-tokens"): "DSOCR_MAX_NEW_TOKENS",
    ("analyze", "--max-new-tokens"): "DSOCR_MAX_NEW_TOKENS",
    ("model", "--peak-tflops"): "DSOCR_PEAK_TFLOPS",
    ("analyze", "--peak-tflops"): "DSOCR_PEAK_TFLOPS",
    ("model", "--peak-tbps"): "DSOCR_PEAK_TBPS",
    ("analyze", "--peak-tbps"): "DSOCR_PEAK_TBPS",
    ("model", "--gpu"): "DSOCR_GPU",
    ("analyze", "--gpu"): "DSOCR_GPU",
    ("capture", "--nsys"): "DSOCR_NSYS",
    ("export", "--nsys"): "DSOCR_NSYS",
    ("doctor", "--nsys"): "DSOCR_NSYS",
    ("capture", "--runs-dir"): "DSOCR_RUNS_DIR",
    ("doctor", "--runs-dir"): "DSOCR_RUNS_DIR",
    ("capture", "--dtype"): "DSOCR_DTYPE",
    ("model", "--dtype"): "DSOCR_DTYPE",
    ("capture", "--device"): "DSOCR_DEVICE",
    ("capture", "--seed"): "DSOCR_SEED",
    ("capture", "--repeats"): "DSOCR_REPEATS",
    ("capture", "--warmup"): "DSOCR_WARMUP",
    ("capture", "--capture-warmup"): "DSOCR_CAPTURE_WARMUP",
    ("model", "--quiet"): "DSOCR_QUIET",
    ("capture", "--json"): "DSOCR_JSON",
    ("doctor", "--verbose"): "DSOCR_VERBOSE",
    # meaning depends on the command: one variable per command
    ("capture", "--out"): "DSOCR_CAPTURE_OUT",
    ("analyze", "--out"): "DSOCR_ANALYZE_OUT",
    ("model", "--out"): "DSOCR_MODEL_OUT",
    ("pages", "--out"): "DSOCR_PAGES_OUT",
    ("diff", "--out"): "DSOCR_DIFF_OUT",
    ("analyze", "--format"): "DSOCR_ANALYZE_FORMAT",
    ("model", "--format"): "DSOCR_MODEL_FORMAT",
    ("model", "--depth"): "DSOCR_MODEL_DEPTH",
    ("capture", "--pages"): "DSOCR_CAPTURE_PAGES",
    ("capture", "--model"): "DSOCR_CAPTURE_MODEL",
}


def _commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, Command]]:
    found: list[tuple[str, Command]] = []
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        found.append((" ".join(path), command))
        if isinstance(command, TyperGroup):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(ROOT)
OPTIONS = [
    (name, param)
    for name, command in COMMANDS
    for param in command.params
    if isinstance(param, TyperOption) and not param.hidden
]
BY_FLAG = {(name, _flag): opt for name, opt in OPTIONS for _flag in opt.opts}


def _long_name(option: TyperOption) -> str:
    longs = [o for o in option.opts if o.startswith("--")]
    return longs[0] if longs else option.opts[0]


def _convention(command: str, option: TyperOption) -> str:
    long = _long_name(option)
    stem = long.lstrip("-").replace("-", "_").upper()
    return f"DSOCR_{command.replace(' ', '_').upper()}_{stem}" if long in PER_COMMAND else f"DSOCR_{stem}"


def _envvars(option: TyperOption) -> list[str]:
    if option.envvar is None:
        return []
    return [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)


def test_there_are_commands_to_check() -> None:
    assert {"capture", "doctor", "export", "model", "pages", "diff", "version"} <= {name for name, _ in COMMANDS}


def test_the_code_and_this_test_agree_on_the_per_command_options() -> None:
    assert set(PER_COMMAND_OPTIONS) == PER_COMMAND


def test_every_option_has_a_dsocr_envvar_shown_in_help() -> None:
    violations = [
        f"dsocr {name} {_long_name(opt)}: envvar={opt.envvar!r} show_envvar={opt.show_envvar}"
        for name, opt in OPTIONS
        if not (_envvars(opt) and all(e.startswith("DSOCR_") for e in _envvars(opt)) and opt.show_envvar)
    ]
    assert violations == [], "options without a shown DSOCR_* envvar:\n" + "\n".join(violations)


def test_every_option_follows_the_naming_convention() -> None:
    """The first (or only) variable of each option is the convention's name."""
    violations = [
        f"dsocr {name} {_long_name(opt)}: {opt.envvar!r}, expected {_convention(name, opt)}"
        for name, opt in OPTIONS
        if _envvars(opt)[:1] != [_convention(name, opt)]
    ]
    assert violations == [], "envvars off the convention:\n" + "\n".join(violations)


@pytest.mark.parametrize(("command", "flag"), sorted(EXPECTED), ids=lambda v: str(v))
def test_the_convention_table(command: str, flag: str) -> None:
    opt = BY_FLAG.get((command, flag))
    assert opt is not None, f"dsocr {command} has no {flag}"
    assert _envvars(opt)[:1] == [EXPECTED[command, flag]]


def test_one_envvar_means_one_option() -> None:
    owners: dict[str, set[str]] = {}
    for _, opt in OPTIONS:
        for envvar in _envvars(opt):
            owners.setdefault(envvar, set()).add(_long_name(opt))
    clashes = {envvar: sorted(names) for envvar, names in owners.items() if len(names) > 1}
    assert clashes == {}


def test_a_shared_envvar_means_the_same_everywhere() -> None:
    """One variable shared by several commands has the same type, and the same default where both have one.

    ``export DSOCR_MAX_NEW_TOKENS=64`` must be accepted by capture, model and analyze alike; a
    default of None means "from elsewhere" (e.g. the run's manifest) and is compatible with any.
    """
    seen: dict[str, list[tuple[str, str, Any]]] = {}
    for name, opt in OPTIONS:
        for envvar in _envvars(opt):
            seen.setdefault(envvar, []).append((name, str(opt.display_type), opt.default))
    clashes = []
    for envvar, uses in seen.items():
        types = {kind for _, kind, _ in uses}
        defaults = {repr(default) for _, _, default in uses if default is not None}
        if len(types) > 1 or len(defaults) > 1:
            clashes.append(f"{envvar}: {uses}")
    assert clashes == [], "envvars shared by options of different type/default:\n" + "\n".join(clashes)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_quiet_json_verbose_where_they_make_sense(name: str, command: Command) -> None:
    flags = {o for p in command.params if isinstance(p, TyperOption) for o in p.opts}
    missing = []
    if name in NEEDS_QUIET_VERBOSE:
        missing += [f for f in ("--quiet", "--verbose") if f not in flags]
    if name in NEEDS_JSON and "--json" not in flags:
        missing.append("--json")
    assert missing == [], f"dsocr {name} lacks {', '.join(missing)}"


def test_shared_flags_keep_their_short_forms() -> None:
    violations = []
    for name, opt in OPTIONS:
        long = _long_name(opt)
        short = {"--quiet": "-q", "--verbose": "-v"}.get(long)
        if short and short not in opt.opts:
            violations.append(f"dsocr {name} {long} lacks {short}")
    assert violations == []


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERM") and not k.startswith("DSOCR_")}
    return {**env, **extra}


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_shows_the_conventions_names_without_colour(name: str, command: Command) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsocr", *name.split(), "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(COLUMNS="250"),
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    for param in command.params:
        if isinstance(param, TyperOption) and not param.hidden:
            assert _convention(name, param) in result.stdout, f"dsocr {name} --help does not show its envvar"


# -- old names ------------------------------------------------------------------------------------


def test_old_names_map_to_options_of_their_command() -> None:
    """Each old name leads to a variable of its own command; no old name is another option's variable."""
    commands = dict(COMMANDS)
    current = {e for _, opt in OPTIONS for e in _envvars(opt)}
    for command, renames in LEGACY_ENVVARS.items():
        own = {e for p in commands[command].params if isinstance(p, TyperOption) for e in _envvars(p)}
        for old, new in renames.items():
            assert new in own, f"{old} -> {new}: dsocr {command} has no option read from {new}"
            assert old not in current - own, f"{old} is another command's variable"


def test_no_old_name_is_a_variable_of_its_own_command() -> None:
    """An old name that is now an option's variable would set two options (``DSOCR_CAPTURE_WARMUP``
    was the old name of ``DSOCR_WARMUP``; it is ``--capture-warmup``'s variable now)."""
    commands = dict(COMMANDS)
    clashes = []
    for command, renames in LEGACY_ENVVARS.items():
        own = {e for p in commands[command].params if isinstance(p, TyperOption) for e in _envvars(p)}
        clashes += [f"dsocr {command}: {old}" for old in renames if old in own]
    assert clashes == []
    assert "DSOCR_CAPTURE_WARMUP" not in LEGACY_ENVVARS["capture"]
    env = {"DSOCR_CAPTURE_WARMUP": "0"}
    assert apply_legacy_envvars(["capture"], env) == [] and env == {"DSOCR_CAPTURE_WARMUP": "0"}


def test_old_names_apply_only_to_their_command() -> None:
    env = {"DSOCR_CAPTURE_MODE": "tiny", "DSOCR_CAPTURE_NSYS": "/opt/nsys", "DSOCR_NSYS": "/usr/bin/nsys"}
    warnings = apply_legacy_envvars(["--help"], env)  # no command: nothing to do
    assert warnings == [] and "DSOCR_MODE" not in env
    apply_legacy_envvars(["model", "--json"], env)  # DSOCR_CAPTURE_MODE never applied to model
    assert "DSOCR_MODE" not in env
    warnings = apply_legacy_envvars(["capture", "--repeats", "1"], env)
    assert env["DSOCR_MODE"] == "tiny"
    assert env["DSOCR_NSYS"] == "/usr/bin/nsys"  # the new name wins
    assert warnings == ["DSOCR_CAPTURE_MODE is the old name of DSOCR_MODE: rename it (it still works for now)"]


def test_old_and_new_model_names_end_to_end(tmp_path: Path) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dsocr", "model", "--json", *args],
            capture_output=True,
            text=True,
            check=False,
            env=_clean_env(**env),
            cwd=tmp_path,
        )

    old = run(DSOCR_NEW_TOKENS="7", DSOCR_MODE="base")
    assert old.returncode == 0, old.stderr
    assert json.loads(old.stdout)["workload"]["new_tokens"] == 7
    assert json.loads(old.stdout)["workload"]["mode"] == "base"
    assert old.stderr == (
        "dsocr: warning: DSOCR_NEW_TOKENS is the old name of DSOCR_MAX_NEW_TOKENS: rename it (it still works for now)\n"
    )
    new = run(DSOCR_MAX_NEW_TOKENS="9", DSOCR_DTYPE="float32", DSOCR_CROPS="3x1")
    assert new.returncode == 0 and new.stderr == ""
    workload = json.loads(new.stdout)["workload"]
    assert (workload["new_tokens"], workload["crop_grid"]) == (9, [3, 1])
    assert run("--dtype", "fp32", "--crops", "3x1", "--max-new-tokens", "9").stdout == new.stdout
    assert run("--crops", "3x1", "--max-new-tokens", "9").stdout != new.stdout  # the dtype was read


# -- quiet, json, verbose -------------------------------------------------------------------------


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_model_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["model", "--quiet"], capsys) == (0, "", "")
    assert _main(["model", "--quiet", "--out", str(tmp_path / "m.md")], capsys) == (0, "", "")
    assert (tmp_path / "m.md").read_text().startswith("#")
    code, out, err = _main(["model", "--quiet", "--json"], capsys)
    assert (code, err) == (0, "") and json.loads(out)["schema"] == "dsocr.model/2"


def test_model_new_tokens_alias(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's example spells it --new-tokens; --max-new-tokens is the shared name; both work."""
    _, old, _ = _main(
        ["model", "--mode", "gundam", "--crops", "2x2", "--prompt-tokens", "12", "--new-tokens", "128", "--json"],
        capsys,
    )
    _, new, _ = _main(["model", "--mode", "gundam", "--crops", "2x2", "--max-new-tokens", "128", "--json"], capsys)
    assert old == new and json.loads(new)["workload"]["new_tokens"] == 128
    _, default, _ = _main(["model", "--json"], capsys)
    assert json.loads(default)["workload"]["new_tokens"] == 32  # capture's default: model predicts a default capture


def test_model_takes_captures_dtype_names(capsys: pytest.CaptureFixture[str]) -> None:
    """DSOCR_DTYPE is shared: model reads capture's names (auto = bf16 on CUDA) as well as its own."""
    outputs = {dtype: _main(["model", "--json", "--dtype", dtype], capsys)[1] for dtype in ("auto", "bf16", "bfloat16")}
    assert len(set(outputs.values())) == 1
    assert (
        _main(["model", "--json", "--dtype", "float32"], capsys)[1]
        == _main(["model", "--json", "--dtype", "fp32"], capsys)[1]
    )


def test_pages_quiet_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["pages", "--out", str(tmp_path / "a"), "--quiet"], capsys) == (0, "", "")
    code, out, err = _main(["pages", "--out", str(tmp_path / "b"), "--json"], capsys)
    assert (code, err) == (0, "")
    assert len(json.loads(out)["pages"]) == 12


def test_doctor_json_is_only_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(["doctor", "--json", "--runs-dir", str(tmp_path)], capsys)
    assert code in (ExitCode.OK, ExitCode.DOCTOR_PROBLEMS) and err == ""
    assert {c["name"] for c in json.loads(out)["checks"]} >= {"python", "nsys"}
    code, out, _ = _main(["doctor", "--quiet", "--runs-dir", str(tmp_path)], capsys)
    assert out == ""


def test_capture_json_is_only_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsocr.capture import driver
    from dsocr.contract.run_manifest import RunManifest

    def fake(settings: driver.CaptureSettings, reporter: Any, **_: Any) -> driver.CaptureResult:
        reporter.info(f"{driver.RUN_DIR_MESSAGE}{tmp_path / 'run'}")
        reporter.warn("a warning stays on stderr")
        manifest = RunManifest.from_json({"status": "complete", "model": settings.model})
        return driver.CaptureResult(run_dir=tmp_path / "run", manifest=manifest)

    monkeypatch.setattr(driver, "run_capture", fake)
    code, out, err = _main(["capture", "--json", "--mode", "tiny"], capsys)
    assert (code, err) == (0, "dsocr: warning: a warning stays on stderr\n")
    assert json.loads(out) == {"run_dir": str(tmp_path / "run"), "manifest": {"status": "complete", "model": "replica"}}
    code, out, err = _main(["capture", "--quiet"], capsys)
    assert (code, out, err) == (0, "", "dsocr: warning: a warning stays on stderr\n")


# -- Ctrl-C and internal errors -------------------------------------------------------------------

_WAITER = textwrap.dedent(
    """
    import sys, time
    from dsocr.cli import main
    from dsocr.cli.app import app
    from dsocr.cli.common import Ui, VerboseOpt

    @app.command(name="test-wait")
    def _wait() -> None:
        print("ready", flush=True)
        time.sleep(60)

    @app.command(name="test-bug")
    def _bug(verbose: VerboseOpt = False) -> None:
        Ui(verbose=verbose)
        raise RuntimeError("a bug")

    main(sys.argv[1:])
    """
)


def test_ctrl_c_is_one_line_and_130(tmp_path: Path) -> None:
    script = tmp_path / "waiter.py"
    script.write_text(_WAITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), "test-wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (ExitCode.INTERRUPTED, "", "dsocr: interrupted\n")


def test_internal_error_traceback_only_with_verbose(tmp_path: Path) -> None:
    script = tmp_path / "waiter.py"
    script.write_text(_WAITER)
    line = (
        "dsocr: internal error: RuntimeError: a bug (a bug in dsocr; rerun with --verbose for the traceback "
        "and please report it)\n"
    )
    plain = subprocess.run([sys.executable, str(script), "test-bug"], capture_output=True, text=True, env=_clean_env())
    assert (plain.returncode, plain.stderr) == (ExitCode.INTERNAL, line)
    verbose = subprocess.run(
        [sys.executable, str(script), "test-bug", "-v"], capture_output=True, text=True, env=_clean_env()
    )
    assert verbose.returncode == ExitCode.INTERNAL
    assert verbose.stderr.startswith("Traceback (most recent call last):") and verbose.stderr.endswith(line)


def test_keyboard_interrupt_in_a_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import dsocr.analytic.workload as workload

    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(workload, "estimate", interrupted)
    assert _main(["model"], capsys) == (ExitCode.INTERRUPTED, "", "dsocr: interrupted\n")


def test_ctrl_c_in_capture_names_the_kept_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dsocr.capture import driver

    def fake(settings: driver.CaptureSettings, reporter: Any, **_: Any) -> driver.CaptureResult:
        reporter.info(f"{driver.RUN_DIR_MESSAGE}{tmp_path / 'run'}")
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "run_capture", fake)
    code, out, err = _main(["capture", "--quiet"], capsys)
    assert (code, out) == (ExitCode.INTERRUPTED, "")
    assert err == f"dsocr: interrupted: {tmp_path / 'run'} keeps what was captured (manifest status: interrupted)\n"


def test_usage_errors_are_one_line_and_help_keeps_clicks_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(["model", "--batch", "many"], capsys)
    assert code == ExitCode.USAGE and out == ""
    assert err.startswith("dsocr: error: dsocr model: Invalid value for '--batch'") and err.count("\n") == 1
    assert err.endswith("; see `dsocr model --help`\n")
    code, out, err = _main(["model", "--help"], capsys)
    assert (code, err) == (ExitCode.OK, "") and "DSOCR_MAX_NEW_TOKENS" in out
    code, out, err = _main([], capsys)
    assert code == ExitCode.USAGE and "Usage: dsocr" in out + err and "capture" in out + err


@pytest.mark.parametrize(
    "args",
    [("version",), ("analyze",), ("model",), ("model", "--format", "json"), ("pages", "--out", "pages")],
    ids=" ".join,
)
def test_no_colour_codes_when_piped(args: tuple[str, ...], tmp_path: Path) -> None:
    """GPU-free commands print no ANSI escapes on stdout or stderr when these are not terminals."""
    result = subprocess.run(
        [sys.executable, "-m", "dsocr", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(DSOCR_CACHE_DIR=str(tmp_path / "cache")),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout or result.stderr
    assert "\x1b[" not in result.stdout
    assert "\x1b[" not in result.stderr
