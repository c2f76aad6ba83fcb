"""The user docs agree with the code: commands, flags, environment variables, tables, names."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperCommand, TyperGroup, TyperOption

from dsocr.analyze.repeats import CV_LIMIT
from dsocr.capture import doctor
from dsocr.capture.nsys import MIN_NSYS_FOR_CUDA
from dsocr.cli import _register_commands
from dsocr.cli.app import app
from dsocr.contract import module_paths as mp
from dsocr.contract import nvtx_names as nv
from dsocr.contract.errors import ExitCode

#: A registered command as typer builds it (public typer classes only).
Command = TyperCommand | TyperGroup

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
#: The docs this test owns; every docs/*.md and the README are checked for commands and variables.
GUIDE = DOCS / "user-guide.md"
METRICS = DOCS / "metrics.md"
CONTRACT = DOCS / "nvtx-contract.md"
TROUBLE = DOCS / "troubleshooting.md"
OWN_DOCS = (GUIDE, METRICS, CONTRACT, TROUBLE)
ALL_DOCS = sorted({*DOCS.glob("*.md"), *OWN_DOCS, *([REPO / "README.md"] if (REPO / "README.md").exists() else [])})

_register_commands()
ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)
_CTX = typer.Context(ROOT)
COMMANDS: dict[str, Command] = {}
for _name in ROOT.list_commands(_CTX):
    _cmd = ROOT.get_command(_CTX, _name)
    assert _cmd is not None
    COMMANDS[_name] = _cmd
    if isinstance(_cmd, TyperGroup):  # a command group (dsocr whatif): its commands as "whatif run"
        _sub_ctx = typer.Context(_cmd)
        for _sub in _cmd.list_commands(_sub_ctx):
            _sub_cmd = _cmd.get_command(_sub_ctx, _sub)
            assert _sub_cmd is not None
            COMMANDS[f"{_name} {_sub}"] = _sub_cmd


def _flags(command: Command) -> set[str]:
    flags = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, TyperOption):
            flags.update(param.opts)
            flags.update(param.secondary_opts)
    return flags


ALL_FLAGS = set().union(*(_flags(c) for c in COMMANDS.values()))
OPTION_ENVVARS = {
    envvar
    for c in COMMANDS.values()
    for p in c.params
    if isinstance(p, TyperOption) and p.envvar
    for envvar in ([p.envvar] if isinstance(p.envvar, str) else p.envvar)
}
SOURCE_ENVVARS = {
    m for path in (REPO / "src" / "dsocr").rglob("*.py") for m in re.findall(r"DSOCR_[A-Z0-9_]+", path.read_text())
}


def _fenced_lines(text: str) -> list[str]:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def _dsocr_invocations(path: Path) -> list[str]:
    """``dsocr ...`` command lines in fenced blocks, comments and pipes cut off."""
    found = []
    for line in _fenced_lines(path.read_text()):
        line = re.sub(r"\s+#.*$", "", line).split("|")[0].strip()
        if line.startswith("dsocr "):
            found.append(line)
    return found


def _code_spans(text: str) -> list[str]:
    without_blocks = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`]+)`", without_blocks)


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: p.name)
def test_commands_and_flags_in_code_blocks_exist(path: Path) -> None:
    problems = []
    for line in _dsocr_invocations(path):
        words = shlex.split(line.replace("<", "_").replace(">", "_"))
        name = words[1]
        if len(words) > 2 and f"{name} {words[2]}" in COMMANDS:  # a group's command: dsocr whatif run
            name, words = f"{name} {words[2]}", [words[0], f"{name} {words[2]}", *words[3:]]
        if name not in COMMANDS:
            problems.append(f"{line}: no command `dsocr {name}`")
            continue
        for word in words[2:]:
            flag = word.split("=")[0]
            if flag.startswith("-") and flag not in _flags(COMMANDS[name]):
                problems.append(f"{line}: `dsocr {name}` has no {flag}")
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", OWN_DOCS, ids=lambda p: p.name)
def test_flags_in_inline_code_exist(path: Path) -> None:
    """Inline code that is not an nsys/pip/python command names only flags some dsocr command has."""
    problems = []
    for span in _code_spans(path.read_text()):
        if re.match(r"\s*(nsys|pip|python|nvidia-smi|bash)\b", span):
            continue
        for flag in re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", span):
            if flag not in ALL_FLAGS:
                problems.append(f"`{span}`: {flag}")
    assert problems == [], f"{path.name}: flags no dsocr command has:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: p.name)
def test_documented_envvars_exist(path: Path) -> None:
    documented = set(re.findall(r"DSOCR_[A-Z0-9_]+", path.read_text()))
    unknown = sorted(documented - OPTION_ENVVARS - SOURCE_ENVVARS)
    assert unknown == [], f"{path.name} documents variables no option or module reads: {unknown}"


def _option_variables() -> dict[str, tuple[str, str]]:
    """Each option's (first, shown) variable -> (its long flag, the commands that have it)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for name, command in COMMANDS.items():
        for p in command.params:
            if isinstance(p, TyperOption) and not p.hidden and p.envvar:
                envvar = p.envvar if isinstance(p.envvar, str) else p.envvar[0]
                long = next(o for o in p.opts if o.startswith("--"))
                flag, names = found.setdefault(envvar, (long, []))
                assert flag == long, f"{envvar} is read by {flag} and {long}"
                names.append(name)
    return {envvar: (flag, ", ".join(sorted(names))) for envvar, (flag, names) in found.items()}


def test_guide_lists_every_environment_variable() -> None:
    """The "Environment variables" table: every option's variable, its option and commands, nothing else."""
    section = GUIDE.read_text().split("## Environment variables")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(DSOCR_\w+)` \| `(--[\w-]+)` \| ([\w, -]+) \|$", section, flags=re.M)
    assert len(rows) == len({envvar for envvar, _, _ in rows})
    assert {envvar: (flag, names) for envvar, flag, names in rows} == _option_variables()


def test_guide_names_the_old_variables() -> None:
    """The old names still read (with a warning) are documented with their new names."""
    from dsocr.cli.common import LEGACY_ENVVARS

    section = " ".join(GUIDE.read_text().split("## Environment variables")[1].split("\n## ")[0].split())
    for renames in LEGACY_ENVVARS.values():
        for old, new in renames.items():
            if old.startswith("DSOCR_CAPTURE_"):
                assert new == old.replace("CAPTURE_", "", 1)
                assert "`DSOCR_CAPTURE_<OPTION>` for capture's shared options (now `DSOCR_<OPTION>`)" in section
            else:
                assert f"`{old}`" in section and f"`{new}`" in section, old


def test_every_command_is_in_the_user_guide() -> None:
    text = GUIDE.read_text()
    missing = [name for name in COMMANDS if f"dsocr {name}" not in text]
    assert missing == []


def test_guide_exit_codes_match_the_code() -> None:
    rows = re.findall(r"^\| (\d+) \| ", GUIDE.read_text(), flags=re.M)
    assert sorted(int(r) for r in rows) == sorted(int(c) for c in ExitCode)


def test_guide_lists_every_doctor_check() -> None:
    names = [c.name for c in doctor.diagnose(doctor.Facts(python_version="3.11.7")).checks]
    section = GUIDE.read_text().split("## `dsocr doctor`")[1].split("\n## ")[0]
    rows = re.findall(r"^\| ([a-zA-Z][^|]*?) \| (analysis|capture) \|", section, flags=re.M)
    checks = {c.name: c.scope for c in doctor.diagnose(doctor.Facts(python_version="3.11.7")).checks}
    assert [name for name, _ in rows] == names
    assert dict(rows) == checks


def test_troubleshooting_nsys_minimums_match_the_code() -> None:
    rows = re.findall(r"^\| (\d+) \| (\d{4})\.(\d+) \|$", TROUBLE.read_text(), flags=re.M)
    assert {int(m): (int(y), int(r)) for m, y, r in rows} == MIN_NSYS_FOR_CUDA


def test_metrics_cv_threshold_matches_the_code() -> None:
    text = " ".join(METRICS.read_text().split())
    assert f"exceeds {CV_LIMIT:.0%} ({CV_LIMIT:.2f})" in text


def test_nvtx_contract_names_every_range_domain_and_payload() -> None:
    text = CONTRACT.read_text()
    for name in (nv.WARMUP, nv.CAPTURE):
        assert f"`{name}`" in text, name
    for domain in (nv.DOMAIN, nv.MODULE_DOMAIN):
        assert f"`{domain}`" in text
    tree = text.split("## The stage tree")[1].split("```")[1]
    lines = {m.group(2): (i, m.start(2) - m.start(0)) for i, m in enumerate(re.finditer(r"^(.*?)(\w+)", tree, re.M))}
    for child, parent in nv.PARENT.items():
        assert child in lines, child
        if parent is not None:
            assert lines[child][0] > lines[parent][0], f"{child} must come after {parent}"
            assert lines[child][1] > lines[parent][1], f"{child} must be indented under {parent}"
    for stage in nv.PAYLOAD_INDEX:
        assert re.search(rf"^\W*{stage}\s+payload:", tree, re.M), f"{stage} payload undocumented"


def test_nvtx_contract_names_every_module_path() -> None:
    text = CONTRACT.read_text()
    for path in (mp.SAM_PATCH_EMBED, mp.SAM_NECK, mp.SAM_COMPRESSOR, mp.CLIP_EMBEDDINGS, mp.PROJECTOR):
        assert f"`{path}`" in text, path
    for path in (mp.EMBED_TOKENS, mp.DECODER_NORM, mp.LM_HEAD):
        assert f"`{path}`" in text, path
    for fn in (mp.sam_block, mp.clip_layer, mp.decoder_attention, mp.decoder_mlp, mp.decoder_moe):
        assert f"`{fn(7).replace('7', '{i}')}`" in text, fn.__name__
    for fn in (mp.decoder_moe_router, mp.decoder_moe_experts, mp.decoder_moe_shared):
        assert f"`{fn(7).removeprefix(mp.decoder_layer(7))}`" in text, fn.__name__


def test_doc_links_point_at_files() -> None:
    missing = []
    for path in OWN_DOCS:
        for ref in re.findall(r"`((?:docs|src|scripts)/[\w./-]+)`", path.read_text()):
            if "<" not in ref and not (REPO / ref).exists():
                missing.append(f"{path.name}: {ref}")
    assert missing == []


def _guide_laptop_commands() -> list[str]:
    """Guide commands that need no GPU and no file of the user's: they must run as written."""
    runnable = []
    for line in _dsocr_invocations(GUIDE):
        words = shlex.split(line)
        if "<" in line or words[1] not in {"doctor", "model", "pages", "analyze"}:
            continue
        if words[1] == "analyze" and any(not w.startswith("-") for w in words[2:]):
            continue  # needs the user's trace
        runnable.append(line)
    return runnable


@pytest.mark.slow
@pytest.mark.parametrize("line", _guide_laptop_commands())
def test_guide_commands_run_as_written(line: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSOCR_")}
    words = shlex.split(line)
    result = subprocess.run(
        [sys.executable, "-m", "dsocr", *words[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**env, "DSOCR_CACHE_DIR": str(tmp_path / "cache")},
        timeout=300,
    )
    allowed = {ExitCode.OK, ExitCode.DOCTOR_PROBLEMS} if words[1] == "doctor" else {ExitCode.OK}
    assert result.returncode in allowed, result.stderr
    if words[1] == "analyze":
        assert {p.name for p in (tmp_path / "dsocr-report").iterdir()} >= {"report.md", "analysis.json"}


def test_there_are_laptop_commands_to_run() -> None:
    assert {shlex.split(line)[1] for line in _guide_laptop_commands()} >= {"doctor", "analyze"}
