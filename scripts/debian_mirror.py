#!/usr/bin/env python3
"""Print the Debian mirror URI (and the suite) configured in this machine's apt sources.

Used by install-nsys.sh so that no mirror host name is written into the repository: the
temporary source list reuses whatever mirror this machine already trusts. Reads both the
one-line format (`/etc/apt/sources.list`, `*.list`) and the deb822 format (`*.sources`).
Prints `URI SUITE` for the first `deb` entry that is the main archive (not security, not
updates/backports), or exits 1 with a message when there is none.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

_NOT_MAIN_SUFFIXES = ("-security", "-updates", "-backports", "-proposed-updates")


def _one_line_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    """(uri, [suite]) for each `deb` line of a one-line-format sources file."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options: `deb [arch=amd64 signed-by=...] URI ...`
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], [words[1]]


def _deb822_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    """(uri, suites) for each enabled `deb` stanza of a deb822 `.sources` file."""
    for stanza in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0] in " \t" and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def _is_debian_archive(uri: str, suites: list[str]) -> bool:
    main_suites = [s for s in suites if not s.endswith(_NOT_MAIN_SUFFIXES) and "/" not in s]
    return bool(main_suites) and uri.rstrip("/").endswith("/debian")


def find_mirror(files: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """First (uri, suite) of the main Debian archive among (file name, text) pairs."""
    for name, text in files:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for uri, suites in entries:
            if _is_debian_archive(uri, suites):
                suite = next(s for s in suites if not s.endswith(_NOT_MAIN_SUFFIXES) and "/" not in s)
                return uri.rstrip("/"), suite
    return None


def system_source_files(etc_apt: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    """(name, text) of sources.list and sources.list.d/*.list|*.sources, in apt's order."""
    paths = [etc_apt / "sources.list"]
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        paths += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    return [(p.name, p.read_text(errors="replace")) for p in paths if p.is_file()]


def main(argv: list[str]) -> int:
    etc_apt = Path(argv[1]) if len(argv) > 1 else Path("/etc/apt")
    found = find_mirror(system_source_files(etc_apt))
    if found is None:
        print(
            f"debian_mirror: no Debian archive entry in {etc_apt}/sources.list(.d); "
            "add one (a `deb URI SUITE main` line) or pass DSOCR_DEBIAN_MIRROR=URI",
            file=sys.stderr,
        )
        return 1
    print(f"{found[0]} {found[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
