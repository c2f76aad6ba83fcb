"""report.html and summary.md rendered from the H100 fixture's analysis: every section, every number."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

from dsocr.analyze.categories import LABELS
from dsocr.report import html
from dsocr.report.adapt import view_from_analysis
from dsocr.report.model import distinct_short_names, pipeline_stages
from dsocr.report.view import KernelView, Stat
from report_views import foreign_view, full_view, h100_analysis

SECTIONS = (
    "summary",
    "identity",
    "stages",
    "mfu",
    "plots",
    "kernels",
    "operators",
    "memory",
    "host",
    "overhead",
    "assumptions",
    "variance",
    "rules",
)
PLOT_IDS = (
    "plot-stage-breakdown",
    "plot-categories",
    "plot-decode-steps",
    "plot-timeline",
    "plot-roofline",
    "plot-pass-spread",
)
#: Anything that would make the browser fetch: src/href/url()/@import pointing outside the file.
EXTERNAL = re.compile(
    r"""(?:src|href|xlink:href|action)\s*=\s*["']?\s*(?!#|data:)[a-z]+:|url\(\s*["']?(?!#|data:)|@import""", re.I
)


class Sections(HTMLParser):
    """Collects section ids, table cells and every tag's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.cells: list[str] = []
        self.rows: list[tuple[str, ...]] = []
        self._row: list[str] = []
        self._cell: list[str] | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        if tag == "td":
            self._cell = []
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._row.append(self.cells[-1])
            self._cell = None
        if tag == "tr" and self._row:
            self.rows.append(tuple(self._row))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Sections:
    p = Sections()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def h100_doc(h100_sqlite: Path) -> dict:  # type: ignore[type-arg]
    return h100_analysis(str(h100_sqlite))


@pytest.fixture(scope="module")
def h100_html(h100_doc: dict) -> str:  # type: ignore[type-arg]
    return html.render_html(view_from_analysis(h100_doc))


def test_every_section_and_plot_present(h100_html: str) -> None:
    p = parse(h100_html)
    assert p.sections == list(SECTIONS)
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in h100_html
    # every inline SVG is well-formed XML on its own
    for svg in re.findall(r"<svg .*?</svg>", h100_html, flags=re.S):
        ET.fromstring(svg)


def test_self_contained(h100_html: str) -> None:
    assert not EXTERNAL.search(h100_html), EXTERNAL.search(h100_html)
    assert "<script" not in h100_html and "<link" not in h100_html and "<img" not in h100_html
    assert "default-src 'none'" in h100_html  # the CSP forbids any fetch even if a reference slipped in


def test_stage_numbers_match_the_analysis(h100_doc: dict, h100_html: str) -> None:  # type: ignore[type-arg]
    cells = parse(h100_html).cells
    stages = {r["stage"]: r for r in h100_doc["stages"]}
    for name, row in stages.items():
        i = cells.index(name)
        # profiled range, GPU busy, idle, kernels (one pass: the values are the totals)
        assert cells[i + 2] == html.fmt_ms(row["cpu_ns"]), name
        assert cells[i + 3] == html.fmt_ms(row["gpu_busy_ns"]), name
        assert cells[i + 4] == html.fmt_pct(1 - row["gpu_busy_ns"] / row["cpu_ns"]), name
        assert cells[i + 5] == f"{row['kernels']:,}", name
    assert stages["decode"]["cpu_ns"] == 5_241_002_968  # the fixture itself
    assert "5,241.0 ms" in cells and "76" in cells  # decode range and its tokens (decode steps)


def test_top_kernels_and_operators_match(h100_doc: dict, h100_html: str) -> None:  # type: ignore[type-arg]
    p = parse(h100_html)
    cells, rows = p.cells, set(p.rows)
    shown = pipeline_stages([r["stage"] for r in h100_doc["stages"]])
    assert shown == ["prefill", "decode"]  # decode_step repeats decode's tables
    for stage in shown:
        ks = [k for k in h100_doc["top_kernels"] if k["stage"] == stage]
        for k, short in zip(ks, distinct_short_names([k["name"] for k in ks], 110), strict=True):
            expected = (
                short,
                LABELS[k["category"]],
                f"{k['instances']:,}",
                html.fmt_ms(k["total_ns"]),
                html.fmt_pct(k["pct"] / 100),
            )
            assert expected in rows, expected
            assert f'title="{escape(k["name"])}"' in h100_html  # the full name as a tooltip
        assert len({s for s in distinct_short_names([k["name"] for k in ks])}) == len(ks)  # none merged
    ops = h100_doc["operators"]
    assert ops, "the fixture has emit_nvtx operator ranges"
    top = ops[0]
    assert top["operator"] in cells and html.fmt_ms(top["gpu_ns"]) in cells
    # pipeline order: prefill's tables come before decode's
    assert h100_html.index("<h3>prefill</h3>") < h100_html.index("<h3>decode</h3>")
    assert "<h3>decode_step</h3>" not in h100_html


def test_host_side_per_token(h100_doc: dict, h100_html: str) -> None:  # type: ignore[type-arg]
    rows = parse(h100_html).rows
    dec = next(r for r in h100_doc["stages"] if r["stage"] == "decode")
    host = [r for r in rows if len(r) == 9 and r[0] == "decode"]
    assert len(host) == 1
    row = host[0]
    assert row[1] == f"{dec['launches']:,}"
    assert row[4] == str(dec["decode_steps"])
    assert row[5] == html.fmt_count(dec["launches"] / dec["decode_steps"])
    assert row[5] == "901"  # 68,476 launches / 76 decode steps


def test_absent_sections_say_so(h100_html: str) -> None:
    # a foreign trace: no manifest, timing or analytic model
    for words in (
        "Model-level MFU is not available",
        "No unprofiled baseline",
        "No run manifest",
        "FLOPs, MFU, MBU and predictions are not available: no workload",
        "Model-level MFU is not available: no workload",
        "Single pass: the spread across passes is unknown",
    ):
        assert words in h100_html, words
    # the GPU is known (H100): its peak is, too; what is missing is the workload, and the report says so
    assert "No GPU peak is known" not in h100_html
    assert "Peaks used: 989.4 TFLOP/s dense BF16, 3.35 TB/s memory" in h100_html


def test_full_view_renders_every_part() -> None:
    v = full_view()
    text = html.render_html(v)
    cells = parse(text).cells
    assert "4,565.3 ± 351.0 ms (CV 7.7%, s.e. 4.4%)" in cells  # decode range over three passes
    assert "3,300.0 ± 100.0 ms (CV 3.0%, s.e. 1.7%)" in cells  # unprofiled
    assert "38.3%" in cells  # profiler overhead of decode: 4565.3 / 3300 - 1
    assert (
        "51.0 ± 1.0 ms (CV 2.0%, s.e. 1.1%)" in cells
    )  # vision: stddev with the mean's precision; s.e. = CV / sqrt(3)
    assert "6.21 GiB" in text and "46 MiB" not in text  # weights in GiB
    assert "page-01.png" in cells
    assert "Random weights: MoE routing is near uniform" in text
    assert 'data-rule="decode-host-overhead"' in text
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in text
    assert "No analytic" not in text and "Single pass" not in text


def test_no_gpu_trace_has_no_idle_claims() -> None:
    v = foreign_view()
    v = attrs.evolve(v, stages=tuple(attrs.evolve(s, has_gpu=False) for s in v.stages))
    md = html.render_summary_md(v)
    assert "recorded no GPU activity" in md
    assert "idle" not in md.lower()


def test_write_outputs(tmp_path: Path) -> None:
    paths = html.write(full_view(), tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names == sorted(["report.html", "summary.md"] + [f"plots/{p.removeprefix('plot-')}.svg" for p in PLOT_IDS])
    for p in paths:
        if p.suffix == ".svg":
            ET.parse(p)
    assert not list(tmp_path.rglob("*.tmp"))


def test_html_escapes_names() -> None:
    evil = KernelView("decode", "<script>alert(1)</script>", 1.0, 1, 0.1)
    text = html.render_html(attrs.evolve(full_view(), kernels=(evil,)))
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_write_for_analysis_with_run_dir(h100_doc: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"settings": {"mode": "base", "model": "replica"}}')
    paths = html.write_for_analysis(h100_doc, tmp_path / "out", run_dir=run)
    text = (tmp_path / "out" / "report.html").read_text()
    assert "No run manifest" not in text and "<dd>base</dd>" in text
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~_umask() for p in paths)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_plots_carry_the_analysis_values(h100_doc: dict, h100_html: str) -> None:  # type: ignore[type-arg]
    # decode steps: the longest decode range of the fixture is the timed run of 64 steps
    steps = sorted((r for r in h100_doc["stage_instances"] if r["stage"] == "decode_step"), key=lambda r: r["start"])
    decodes = sorted((r for r in h100_doc["stage_instances"] if r["stage"] == "decode"), key=lambda r: r["start"])
    longest = max(decodes, key=lambda r: r["decode_steps"])
    inside = [r for r in steps if longest["start"] <= r["start"] and r["end"] <= longest["end"]]
    assert len(inside) == longest["decode_steps"] == 64
    svg = re.search(r'<svg [^>]*id="plot-decode-steps".*?</svg>', h100_html, flags=re.S)
    assert svg is not None
    root = ET.fromstring(svg.group(0))
    ns = "{http://www.w3.org/2000/svg}"
    tips = [c.findtext(f"{ns}title") for c in root.iter(f"{ns}circle") if c.get("class") == "step"]
    assert tips == [f"step {i}: {r['cpu_ns'] / 1e6:,.3g} ms" for i, r in enumerate(inside)]
    # stage breakdown: busy and idle of each top stage
    svg = re.search(r'<svg [^>]*id="plot-stage-breakdown".*?</svg>', h100_html, flags=re.S)
    assert svg is not None
    labels = [t.text for t in ET.fromstring(svg.group(0)).iter(f"{ns}text")]
    for r in h100_doc["stages"]:
        if r["stage"] in ("prefill", "decode"):
            idle = 100 * (1 - r["gpu_busy_ns"] / r["cpu_ns"])
            assert f"{r['cpu_ns'] / 1e6:,.0f} ms, {idle:.1f}% idle" in labels


def test_counts_that_do_not_vary_show_no_spread() -> None:
    assert html.fmt_stat(Stat.of([2961, 2961, 2961]), "count") == "2,961"
    assert html.fmt_stat(Stat.of([10, 12]), "count") == "11 ± 1.4 (CV 12.9%, s.e. 9.1%)"
    assert html.fmt_pct(0.00047859) == "0.048%"  # decode MFU: not 0.0%


def test_memory_copies_show_their_count(h100_doc: dict) -> None:  # type: ignore[type-arg]
    """The count report.md shows (memcpys) is in the HTML Memory section too, not n/a."""
    view = view_from_analysis(h100_doc)
    assert view.memory is not None
    top = [r for r in h100_doc["stages"] if r["stage"] in ("prefill", "decode")]
    n, nbytes = sum(r["memcpys"] for r in top), sum(r["d2d_bytes"] + r["h2d_bytes"] + r["d2h_bytes"] for r in top)
    assert view.memory.copies[0] == ("all directions", n, nbytes)
    text = html.render_html(view)
    assert f'<td>all directions</td><td class="num">{n:,}</td>' in text


def test_stage_tables_are_split_to_fit() -> None:
    """Time (8 columns) and work/efficiency (7) instead of one 14-column table; CV on its own line."""
    text = html.render_html(full_view())
    for tid, n in (("stage-times", 8), ("stage-work", 7)):
        head = text.split(f'id="{tid}"', 1)[1].split("</thead>", 1)[0]
        assert head.count("<th>") + head.count("<th ") == n, tid
    assert '<span class="cv"> (CV 7.7%, s.e. 4.4%)</span>' in text
    assert html.fmt_stat(Stat.of([0.00048, 0.00046, 0.0005]), "pct") == "0.048% ± 0.002% (CV 4.2%, s.e. 2.4%)"
