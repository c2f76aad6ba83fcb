"""scripts/debian_mirror.py: the mirror URI install-nsys.sh reuses, from sample apt sources."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "debian_mirror.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("debian_mirror", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DEB822 = """Types: deb
# http://snapshot.example/archive/debian-security/20250520T000000Z
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = """# deb http://commented.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian trixie main contrib
deb http://two.example/debian trixie main
"""


def test_deb822_skips_security_and_src_and_strips_slash() -> None:
    assert _module().find_mirror([("debian.sources", DEB822)]) == ("http://mirror.example/debian", "bookworm")


def test_one_line_format_with_options() -> None:
    assert _module().find_mirror([("sources.list", ONE_LINE)]) == ("http://one.example/debian", "trixie")


def test_foreign_repositories_are_not_debian_mirrors() -> None:
    foreign = "deb https://packages.example/apt cloud-sdk main\n"
    nodesource = "Types: deb\nURIs: https://node.example/node_20.x\nSuites: nodistro\nComponents: main\n"
    mod = _module()
    assert mod.find_mirror([("a.list", foreign), ("b.sources", nodesource)]) is None
    assert mod.find_mirror([("a.list", foreign), ("debian.sources", DEB822)]) == (
        "http://mirror.example/debian",
        "bookworm",
    )


def test_disabled_stanza_is_skipped() -> None:
    disabled = DEB822.replace("Types: deb\n# a comment", "Types: deb\nEnabled: no\n# a comment")
    assert _module().find_mirror([("debian.sources", disabled)]) is None


def test_cli_reads_an_etc_apt_directory(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text(ONE_LINE)
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout == "http://mirror.example/debian bookworm\n"


def test_cli_without_debian_entry_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://packages.example/apt cloud-sdk main\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stdout == ""
    assert f"no Debian archive entry in {tmp_path}/sources.list(.d)" in out.stderr
    assert "DSOCR_DEBIAN_MIRROR" in out.stderr
