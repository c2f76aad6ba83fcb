"""CLI conventions (issue 6), checked on every registered command by introspecting the typer app.

- every option can also come from a ``DSOCR_*`` environment variable, shown in ``--help``;
- the variable is named after the option (``--max-new-tokens`` -> ``DSOCR_MAX_NEW_TOKENS``),
  or after command and option where the option means different things in different commands
  (``dsocr pages --out`` -> ``DSOCR_PAGES_OUT``), and one variable belongs to one option name;
- commands that run for a while or print results have ``--quiet`` and ``--verbose``, and
  those that produce a result for scripts have ``--json``;
- ``--help`` output carries no colour codes when stdout is not a terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer import _click as click  # typer vendors click
from typer.core import TyperGroup, TyperOption

from dsocr.cli import _register_commands
from dsocr.cli.app import app

_register_commands()
ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)

#: Commands that must have --quiet and --verbose (when they exist), and those that must have --json.
NEEDS_QUIET_VERBOSE = {"analyze", "capture", "diff", "doctor", "export", "model", "pages"}
NEEDS_JSON = {"analyze", "capture", "diff", "doctor"}


def _commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
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


def _long_name(option: TyperOption) -> str:
    longs = [o for o in option.opts if o.startswith("--")]
    return longs[0] if longs else option.opts[0]


def _expected_envvars(command: str, option: TyperOption) -> set[str]:
    stem = _long_name(option).lstrip("-").replace("-", "_").upper()
    return {f"DSOCR_{stem}", f"DSOCR_{command.replace(' ', '_').replace('-', '_').upper()}_{stem}"}


def _envvars(option: TyperOption) -> list[str]:
    if option.envvar is None:
        return []
    return [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)


def test_there_are_commands_to_check() -> None:
    assert {"doctor", "version"} <= {name for name, _ in COMMANDS}


def test_every_option_has_a_dsocr_envvar_shown_in_help() -> None:
    violations = [
        f"dsocr {name} {_long_name(opt)}: envvar={opt.envvar!r} show_envvar={opt.show_envvar}"
        for name, opt in OPTIONS
        if not (_envvars(opt) and all(e.startswith("DSOCR_") for e in _envvars(opt)) and opt.show_envvar)
    ]
    assert violations == [], "options without a shown DSOCR_* envvar:\n" + "\n".join(violations)


def test_envvar_is_named_after_the_option() -> None:
    violations = [
        f"dsocr {name} {_long_name(opt)}: {opt.envvar!r}, expected one of {sorted(_expected_envvars(name, opt))}"
        for name, opt in OPTIONS
        if _envvars(opt) and not _expected_envvars(name, opt) & set(_envvars(opt))
    ]
    assert violations == [], "envvars not named after their option:\n" + "\n".join(violations)


def test_one_envvar_means_one_option() -> None:
    owners: dict[str, set[str]] = {}
    for _, opt in OPTIONS:
        for envvar in _envvars(opt):
            owners.setdefault(envvar, set()).add(_long_name(opt))
    clashes = {envvar: sorted(names) for envvar, names in owners.items() if len(names) > 1}
    assert clashes == {}


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_quiet_json_verbose_where_they_make_sense(name: str, command: click.Command) -> None:
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


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_shows_envvars_without_colour(name: str, command: click.Command) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERM")}
    result = subprocess.run(
        [sys.executable, "-m", "dsocr", *name.split(), "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "COLUMNS": "250"},
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    for param in command.params:
        if isinstance(param, TyperOption) and not param.hidden:
            for envvar in _envvars(param):
                assert envvar in result.stdout, f"dsocr {name} --help does not show {envvar}"


def test_a_shared_envvar_means_the_same_everywhere() -> None:
    """One variable shared by several commands must have the same type and default in each.

    Otherwise ``export DSOCR_FORMAT=md,json,sqlite`` for ``analyze`` would break a command whose
    ``--format`` takes ``md|json``: such options need a per-command variable (``DSOCR_<CMD>_<OPTION>``).
    """
    seen: dict[str, dict[tuple[str, str], list[str]]] = {}
    for name, opt in OPTIONS:
        meaning = (str(opt.display_type), repr(opt.default))
        for envvar in _envvars(opt):
            seen.setdefault(envvar, {}).setdefault(meaning, []).append(name)
    clashes = {
        envvar: {f"{kind} default {default}": cmds for (kind, default), cmds in meanings.items()}
        for envvar, meanings in seen.items()
        if len(meanings) > 1
    }
    assert clashes == {}, "envvars shared by options of different type/default:\n" + "\n".join(
        f"{envvar}: {value}" for envvar, value in clashes.items()
    )


@pytest.mark.parametrize(
    "args",
    [("version",), ("analyze",), ("model",), ("model", "--format", "json"), ("pages", "--out", "pages")],
    ids=" ".join,
)
def test_no_colour_codes_when_piped(args: tuple[str, ...], tmp_path: Path) -> None:
    """GPU-free commands print no ANSI escapes on stdout or stderr when these are not terminals."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERM") and not k.startswith("DSOCR_")}
    result = subprocess.run(
        [sys.executable, "-m", "dsocr", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**env, "DSOCR_CACHE_DIR": str(tmp_path / "cache")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout or result.stderr
    assert "\x1b[" not in result.stdout
    assert "\x1b[" not in result.stderr
