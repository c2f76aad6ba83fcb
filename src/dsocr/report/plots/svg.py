"""A tiny SVG toolkit: scales, ticks, axes, legends, a figure with an accessible title.

Hand-written so the plots need no dependency, render offline in any browser or Markdown
viewer, and come out byte-for-byte the same for the same data (docs/report.md says why).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

import attrs

#: Fixed colours per kernel category (the same in every plot and report).
CATEGORY_COLORS: dict[str, str] = {
    "gemm": "#4e79a7",
    "attention": "#f28e2b",
    "moe": "#e15759",
    "moe_routing": "#e15759",
    "sort_scan": "#ff9da7",
    "norm": "#76b7b2",
    "normalization": "#76b7b2",
    "elementwise": "#59a14f",
    "reduction": "#edc948",
    "copy": "#b07aa1",
    "memcpy": "#b07aa1",
    "memset": "#d4a6c8",
    "communication": "#9c755f",
    "other": "#bab0ac",
}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
BUSY = "#4e79a7"
IDLE = "#d9d9d9"
INK = "#222222"
GRID = "#e6e6e6"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


def color_for(category: str, index: int = 0) -> str:
    """The colour of a category (a palette colour by index when the category is unknown)."""
    return CATEGORY_COLORS.get(category.lower(), PALETTE[index % len(PALETTE)])


def num(v: float) -> str:
    """A coordinate with at most two decimals (keeps the SVG small and deterministic)."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def si(value: float, unit: str = "") -> str:
    """``value`` with an SI prefix: 1.2e12 -> ``1.2 T``; 0.005 -> ``5 m``."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    exp = math.floor(math.log10(abs(value)) / 3)
    exp = max(-3, min(5, exp))
    prefix = {-3: "n", -2: "µ", -1: "m", 0: "", 1: "k", 2: "M", 3: "G", 4: "T", 5: "P"}[exp]
    scaled = value / 10 ** (3 * exp)
    return f"{scaled:.3g} {prefix}{unit}".strip()


@attrs.frozen
class Linear:
    """A linear map from data ``[d0, d1]`` to pixels ``[r0, r1]``."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        span = self.d1 - self.d0
        t = 0.0 if span == 0 else (v - self.d0) / span
        return self.r0 + t * (self.r1 - self.r0)

    def ticks(self, count: int = 5) -> list[float]:
        """Round tick values covering the domain."""
        return nice_ticks(self.d0, self.d1, count)


@attrs.frozen
class Log:
    """A log10 map from data ``[d0, d1]`` (both > 0) to pixels ``[r0, r1]``."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        lo, hi = math.log10(self.d0), math.log10(self.d1)
        t = 0.0 if hi == lo else (math.log10(max(v, 1e-300)) - lo) / (hi - lo)
        return self.r0 + t * (self.r1 - self.r0)

    def ticks(self, count: int = 8) -> list[float]:
        """Powers of ten inside the domain (every other one when there are many)."""
        lo, hi = math.ceil(math.log10(self.d0) - 1e-9), math.floor(math.log10(self.d1) + 1e-9)
        exps = list(range(lo, hi + 1))
        step = max(1, math.ceil(len(exps) / count))
        return [10.0**e for e in exps[::step]]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers (1, 2, 5 x 10^k steps) from ``lo`` to ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out: list[float] = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def nice_max(hi: float) -> float:
    """A round upper bound >= ``hi`` (1, 2, 2.5, 5 x 10^k); 1 when ``hi`` <= 0."""
    if hi <= 0 or not math.isfinite(hi):
        return 1.0
    mag = 10 ** math.floor(math.log10(hi))
    return float(next(m * mag for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * mag >= hi * (1 - 1e-12)))


def tick_label(v: float) -> str:
    """A short tick label: ``0``, ``2.5``, ``1k``, ``1e-3``."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return si(v).replace(" ", "")
    return f"{v:g}"


class Figure:
    """An SVG document under construction: add elements, then :meth:`render`."""

    def __init__(self, width: int, height: int, title: str, desc: str, plot_id: str) -> None:
        self.width = width
        self.height = height
        self.title = title
        self.desc = desc
        self.plot_id = plot_id
        self.parts: list[str] = []

    def add(self, element: str) -> None:
        """Append raw SVG markup (already escaped)."""
        self.parts.append(element)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, tip: str | None = None, cls: str = "") -> None:
        """A filled rectangle, with a hover tooltip (``<title>``) when ``tip`` is given."""
        attr = f' class="{cls}"' if cls else ""
        body = f"<title>{escape(tip)}</title>" if tip else ""
        w, h = max(0.0, w), max(0.0, h)
        self.parts.append(
            f'<rect{attr} x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" fill="{fill}">{body}</rect>'
            if body
            else f'<rect{attr} x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" fill="{fill}"/>'
        )

    def line(
        self, x1: float, y1: float, x2: float, y2: float, stroke: str = INK, width: float = 1, dash: str = ""
    ) -> None:
        """A straight line."""
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{stroke}" '
            f'stroke-width="{num(width)}"{d}/>'
        )

    def polyline(self, points: Sequence[tuple[float, float]], stroke: str, width: float = 1.5, cls: str = "") -> None:
        """An open polyline through ``points``."""
        pts = " ".join(f"{num(x)},{num(y)}" for x, y in points)
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f'<polyline{attr} points="{pts}" fill="none" stroke="{stroke}" stroke-width="{num(width)}"/>')

    def circle(self, x: float, y: float, r: float, fill: str, tip: str | None = None, cls: str = "") -> None:
        """A dot, with a hover tooltip when ``tip`` is given."""
        attr = f' class="{cls}"' if cls else ""
        body = f"<title>{escape(tip)}</title></circle>" if tip else ""
        head = f'<circle{attr} cx="{num(x)}" cy="{num(y)}" r="{num(r)}" fill="{fill}"'
        self.parts.append(f"{head}>{body}" if body else f"{head}/>")

    def text(
        self,
        x: float,
        y: float,
        s: str,
        anchor: str = "start",
        size: float = 11,
        weight: str = "normal",
        rotate: float | None = None,
        fill: str = INK,
        cls: str = "",
    ) -> None:
        """A text label (escaped)."""
        tr = f' transform="rotate({num(rotate)} {num(x)} {num(y)})"' if rotate is not None else ""
        attr = f' class="{cls}"' if cls else ""
        w = f' font-weight="{weight}"' if weight != "normal" else ""
        self.parts.append(
            f'<text{attr} x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" font-size="{num(size)}"{w} '
            f'fill="{fill}"{tr}>{escape(s)}</text>'
        )

    def x_axis(
        self,
        scale: Linear | Log,
        y: float,
        label: str,
        ticks: Sequence[float],
        fmt: Callable[[float], str] = tick_label,
    ) -> None:
        """A horizontal axis at pixel row ``y`` with ticks, gridlines up to the top margin and a label."""
        self.line(scale.r0, y, scale.r1, y)
        for t in ticks:
            x = scale(t)
            self.line(x, y, x, y + 4)
            self.text(x, y + 15, fmt(t), anchor="middle", size=10, cls="tick")
        self.text((scale.r0 + scale.r1) / 2, y + 32, label, anchor="middle", size=11, cls="axis-label")

    def y_axis(
        self,
        scale: Linear | Log,
        x: float,
        label: str,
        ticks: Sequence[float],
        fmt: Callable[[float], str] = tick_label,
        grid_to: float | None = None,
        right: bool = False,
    ) -> None:
        """A vertical axis at pixel column ``x`` with ticks, optional gridlines and a rotated label."""
        self.line(x, scale.r0, x, scale.r1)
        sign = 1 if right else -1
        for t in ticks:
            y = scale(t)
            if grid_to is not None:
                self.line(x, y, grid_to, y, stroke=GRID)
            self.line(x, y, x + 4 * sign, y)
            self.text(x + 7 * sign, y + 3.5, fmt(t), anchor="start" if right else "end", size=10, cls="tick")
        mid = (scale.r0 + scale.r1) / 2
        lx = x + 48 * sign
        self.text(lx, mid, label, anchor="middle", size=11, rotate=90 if right else -90, cls="axis-label")

    def legend(self, x: float, y: float, items: Sequence[tuple[str, str]], max_width: float) -> float:
        """Colour swatches with labels, wrapped into rows; returns the height used."""
        cx, cy = x, y
        for label, colour in items:
            w = 16 + 6.2 * len(label) + 14
            if cx + w > x + max_width and cx > x:
                cx, cy = x, cy + 16
            self.rect(cx, cy - 9, 10, 10, colour)
            self.text(cx + 14, cy, label, size=10, cls="legend")
            cx += w
        return cy - y + 16

    def render(self) -> str:
        """The finished ``<svg>`` element (standalone: usable inline or as an .svg file)."""
        tid, did = f"{self.plot_id}-title", f"{self.plot_id}-desc"
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" id="{self.plot_id}" class="plot" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
            f'role="img" aria-labelledby="{tid} {did}" style="{FONT}">'
            f'<title id="{tid}">{escape(self.title)}</title><desc id="{did}">{escape(self.desc)}</desc>'
            f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="#ffffff"/>'
        )
        heading = (
            f'<text x="12" y="20" font-size="14" font-weight="bold" fill="{INK}" class="plot-title">'
            f"{escape(self.title)}</text>"
        )
        return head + heading + "".join(self.parts) + "</svg>"


def empty(plot_id: str, title: str, reason: str, width: int = 640) -> str:
    """A small placeholder figure that says why a plot has no data."""
    fig = Figure(width, 60, title, reason, plot_id)
    fig.text(12, 44, reason, size=12, fill="#666666", cls="no-data")
    return fig.render()
