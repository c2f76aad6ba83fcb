"""The standard page set: deterministic, shipped with the package, equal to a fresh generation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from dsocr.capture import pages
from dsocr.cli import main

SHIPPED = pages.shipped_dir()


def _manifest() -> dict[str, dict[str, object]]:
    data = json.loads((SHIPPED / pages.PAGES_MANIFEST).read_text())
    return {str(p["name"]): p for p in data["pages"]}


def test_set_has_four_pages_of_each_kind() -> None:
    kinds = [s.kind for s in pages.SPECS]
    assert len(pages.SPECS) == 12
    assert {k: kinds.count(k) for k in pages.KINDS} == {"text": 4, "mixed": 4, "image": 4}
    assert len({s.seed for s in pages.SPECS}) == 12


@pytest.mark.parametrize("spec", pages.SPECS, ids=lambda s: s.name)
def test_shipped_page_equals_fresh_generation(spec: pages.PageSpec) -> None:
    entry = _manifest()[f"{spec.name}.png"]
    image = pages.render(spec)
    data = pages.encode_png(image)
    assert (entry["kind"], entry["width"], entry["height"]) == (spec.kind, *spec.size)
    assert pages.pixel_sha256(image) == entry["pixel_sha256"]
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    shipped = SHIPPED / f"{spec.name}.png"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == entry["sha256"]
    with Image.open(shipped) as im:
        assert pages.pixel_sha256(im) == entry["pixel_sha256"]


def test_render_is_deterministic_and_pages_differ() -> None:
    spec = pages.SPECS[11]  # photo-like gradients and blur
    assert pages.encode_png(pages.render(spec)) == pages.encode_png(pages.render(spec))
    hashes = {str(e["pixel_sha256"]) for e in _manifest().values()}
    assert len(hashes) == 12


def test_shipped_set_is_small() -> None:
    total = sum(p.stat().st_size for p in SHIPPED.glob("*.png"))
    assert 100_000 < total < 4_000_000
    assert [p.name for p in pages.shipped_pages()] == [f"{s.name}.png" for s in pages.SPECS]


def test_pages_command_writes_set_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    with pytest.raises(SystemExit) as exc:
        main(["pages", "--out", str(out), "--json"])
    assert exc.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["pages"]) == 12
    written = json.loads((out / pages.PAGES_MANIFEST).read_text())
    assert written["pages"] == json.loads((SHIPPED / pages.PAGES_MANIFEST).read_text())["pages"]
    for name in _manifest():
        assert (out / name).read_bytes() == (SHIPPED / name).read_bytes()
