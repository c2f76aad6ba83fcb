"""Open report.html in headless Chromium with the network cut off: no request may leave the file.

Two guards: DNS resolves nothing (``--host-resolver-rules``), and Chromium's NetLog
(``--log-net-log``, no DevTools needed) records every URL request the browser starts; a request
initiated by the page (initiator ``null``/``file://``, not Chromium's own background traffic,
whose initiator is ``not an origin``) to anything but ``file:`` or ``data:`` fails the test.
``--dump-dom`` shows what the browser rendered (every section and plot); a screenshot proves it
painted. Skips with a reason when Debian's ``chromium`` is absent (scripts/install-chromium.sh).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dsocr.report import html
from dsocr.report.adapt import view_from_analysis
from report_views import h100_analysis
from test_html import PLOT_IDS, SECTIONS, parse

_DEBIAN = Path("/usr/bin/chromium")
CHROMIUM = shutil.which("chromium") or (str(_DEBIAN) if _DEBIAN.exists() else None)
SKIP = "Debian's chromium is not installed (bash scripts/install-chromium.sh)"

pytestmark = [pytest.mark.chromium, pytest.mark.skipif(CHROMIUM is None, reason=SKIP)]


def page_requests(netlog: Path) -> list[str]:
    """URLs of the network requests the page itself started (Chromium's own traffic excluded)."""
    doc: dict[str, Any] = json.loads(netlog.read_text())
    start = doc["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for ev in doc["events"]:
        params = ev.get("params") or {}
        if ev["type"] != start or "url" not in params:
            continue
        url = str(params["url"])
        if url.startswith(("file:", "data:")):
            continue
        if params.get("initiator") != "not an origin" or "file://" in str(params.get("network_isolation_key")):
            urls.append(url)
    return urls


def chromium(page: Path, work: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run headless Chromium on ``page``; return the process and the page's own requests."""
    assert CHROMIUM is not None
    netlog = work / "netlog.json"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={work / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={netlog}",
        "--virtual-time-budget=3000",
        *extra,
        page.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert netlog.exists(), res.stderr[-2000:]
    return res, page_requests(netlog)


@pytest.fixture(scope="module")
def report_dir(h100_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    html.write(view_from_analysis(h100_analysis(str(h100_sqlite))), out)
    return out


def test_a_leaky_page_is_caught(tmp_path: Path) -> None:
    """Control: a page that fetches something is caught (so the real test can fail)."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.com/x.png"><p>hi</p></body></html>')
    res, requests = chromium(page, tmp_path, "--dump-dom")
    assert "<p>hi</p>" in res.stdout, res.stderr[-2000:]
    assert requests == ["http://example.com/x.png"]


def test_report_renders_offline_with_every_section(report_dir: Path, tmp_path: Path) -> None:
    res, requests = chromium(report_dir / "report.html", tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert parse(dom).sections == list(SECTIONS)
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in dom, pid
    assert "NVIDIA H100 80GB HBM3" in dom
    assert requests == [], f"report.html requested {requests}"


def test_screenshot(report_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    res, requests = chromium(
        report_dir / "report.html",
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
    )
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        colours = im.convert("RGB").resize((64, 120)).getcolors(64 * 120)
        assert colours is not None and len(colours) > 20  # painted content, not a blank page
    assert requests == []


def test_diff_html_renders_offline(report_dir: Path, h100_sqlite: Path, tmp_path: Path) -> None:
    from dsocr.report import diff as d

    doc = tmp_path / "analysis.json"
    doc.write_text(json.dumps(h100_analysis(str(h100_sqlite))))
    page = tmp_path / "diff.html"
    page.write_text(d.render(d.diff_paths(doc, doc), "html"))
    res, requests = chromium(page, tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert parse(res.stdout).sections == ["diff-stages", "diff-kernels", "diff-operators"]
    assert requests == []
