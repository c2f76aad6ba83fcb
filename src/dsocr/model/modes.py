"""DeepSeek-OCR's resolution modes, crop-grid selection and image-token layout.

Facts from the vendor's code (table in docs/analytic-model.md). A mode has one global view (resized or padded to a
square) and, for ``gundam``/``gundam-m``, a grid of ``w x h`` square crops. SAM (patch 16)
and the compressor (16x fewer tokens, 4x per side) turn a view of side ``S`` into a square
map of ``S / 64`` tokens per side. The decoder sees each map laid out row by row with one
``image_newline`` embedding after every row; the crops are tiled into one big map, and one
``view_separator`` follows the global view.

Crop-grid selection reimplements the vendor's rule (closest aspect ratio among the grids with
``min_crops <= w*h <= max_crops``, candidates scanned by increasing crop count; on an exact
tie of the ratio difference, a later (larger) grid wins only if the image area exceeds half
the area of that grid's crops), and an image no larger than 640 px on both sides gets no crops.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import attrs

from dsocr.contract.errors import BadInput

Fit = Literal["resize", "pad"]

#: Pixels per SAM patch.
PATCH_SIZE: Final = 16
#: Per-side reduction of the compressor (two stride-2 convs: 16x fewer tokens).
DOWNSAMPLE: Final = 4
#: Images no larger than this on both sides get no crops (the vendor's fixed threshold).
NO_CROP_MAX_SIDE: Final = 640


def tokens_per_side(view_size: int) -> int:
    """Vision tokens per side of a square view of ``view_size`` pixels (1024 -> 16, 640 -> 10)."""
    return math.ceil((view_size // PATCH_SIZE) / DOWNSAMPLE)


@attrs.frozen
class ResolutionMode:
    """One resolution mode: its global view and, if it crops, its crop size and limits."""

    name: str
    global_size: int  #: side of the square global view, pixels
    global_fit: Fit  #: ``resize`` (stretch to square) or ``pad`` (keep aspect, pad to square)
    crop_size: int | None = None  #: side of each square crop; None when the mode never crops
    min_crops: int = 2
    max_crops: int = 9
    no_crop_max_side: int = NO_CROP_MAX_SIDE

    @property
    def crops_allowed(self) -> bool:
        """Whether this mode tiles the image into crops."""
        return self.crop_size is not None

    @property
    def global_side(self) -> int:
        """Vision tokens per side of the global view."""
        return tokens_per_side(self.global_size)

    @property
    def crop_side(self) -> int:
        """Vision tokens per side of one crop (0 when the mode never crops)."""
        return tokens_per_side(self.crop_size) if self.crop_size is not None else 0

    def candidate_grids(self) -> tuple[tuple[int, int], ...]:
        """The crop grids ``(w, h)`` this mode may choose, in the order they are scanned."""
        if not self.crops_allowed:
            return ()
        grids = {
            (w, h)
            for w in range(1, self.max_crops + 1)
            for h in range(1, self.max_crops + 1)
            if self.min_crops <= w * h <= self.max_crops
        }
        return tuple(sorted(grids, key=lambda g: (g[0] * g[1], g[0])))


MODES: Final[dict[str, ResolutionMode]] = {
    m.name: m
    for m in (
        ResolutionMode("tiny", 512, "resize"),
        ResolutionMode("small", 640, "resize"),
        ResolutionMode("base", 1024, "pad"),
        ResolutionMode("large", 1280, "pad"),
        ResolutionMode("gundam", 1024, "pad", crop_size=640),
        ResolutionMode("gundam-m", 1280, "pad", crop_size=1024),
    )
}
#: The vendor examples' default mode.
DEFAULT_MODE: Final = "gundam"
#: Grid meaning "no crops".
NO_CROPS: Final = (1, 1)


def get_mode(mode: str | ResolutionMode) -> ResolutionMode:
    """Look up a mode by name (a :class:`ResolutionMode` passes through)."""
    if isinstance(mode, ResolutionMode):
        return mode
    try:
        return MODES[mode.strip().lower()]
    except KeyError:
        raise BadInput(f"unknown resolution mode {mode!r}: use one of {', '.join(MODES)}") from None


def select_crop_grid(width: int, height: int, mode: str | ResolutionMode = DEFAULT_MODE) -> tuple[int, int]:
    """The crop grid ``(w, h)`` the vendor's preprocessing picks for an image; ``(1, 1)`` = no crops."""
    m = get_mode(mode)
    if width <= 0 or height <= 0:
        raise BadInput(f"image size {width}x{height} is not positive: give a width and height of at least 1 pixel")
    if m.crop_size is None or (width <= m.no_crop_max_side and height <= m.no_crop_max_side):
        return NO_CROPS
    aspect = width / height
    area = width * height
    best_diff = math.inf
    best = NO_CROPS
    for w, h in m.candidate_grids():
        diff = abs(aspect - w / h)
        if diff < best_diff:
            best_diff, best = diff, (w, h)
        elif diff == best_diff and area > 0.5 * m.crop_size * m.crop_size * w * h:
            best = (w, h)
    return best


def parse_grid(text: str) -> tuple[int, int]:
    """Parse a crop grid written ``WxH`` (e.g. ``2x2``, ``3x1``); ``none`` or ``1x1`` = no crops."""
    t = text.strip().lower()
    if t in ("none", "0", ""):
        return NO_CROPS
    parts = t.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise BadInput(f"crop grid {text!r} is not WxH with positive integers: write e.g. 2x2 or 3x1")
    return int(parts[0]), int(parts[1])


def parse_size(text: str) -> tuple[int, int]:
    """Parse an image size written ``WxH`` in pixels (e.g. ``1654x2339``)."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise BadInput(f"image size {text!r} is not WxH in pixels: write e.g. 1654x2339")
    return int(parts[0]), int(parts[1])


def check_grid(mode: str | ResolutionMode, grid: tuple[int, int]) -> tuple[int, int]:
    """Validate a crop grid for a mode; returns it."""
    m = get_mode(mode)
    w, h = grid
    if (w, h) == NO_CROPS:
        return NO_CROPS
    if not m.crops_allowed:
        raise BadInput(f"mode {m.name} does not crop, but crop grid {w}x{h} was given: use gundam or gundam-m")
    if w < 1 or h < 1 or not m.min_crops <= w * h <= m.max_crops:
        raise BadInput(
            f"crop grid {w}x{h} has {w * h} crops, mode {m.name} allows {m.min_crops}..{m.max_crops}: "
            "choose a grid in that range or 1x1 for none"
        )
    return w, h


@attrs.frozen
class View:
    """One image view the vision encoder runs on."""

    kind: Literal["global", "crop"]
    size: int  #: side in pixels (square)

    @property
    def side(self) -> int:
        """Vision tokens per side after the compressor."""
        return tokens_per_side(self.size)

    @property
    def tokens(self) -> int:
        """Vision tokens of this view (before layout embeddings)."""
        return self.side * self.side


@attrs.frozen
class TokenLayout:
    """Image embeddings one image contributes to the decoder's input sequence."""

    global_tokens: int  #: vision tokens of the global view
    crop_tokens: int  #: vision tokens of all crops together
    newline_tokens: int  #: ``image_newline`` embeddings (one per row of each tiled map)
    separator_tokens: int  #: ``view_separator`` embeddings (one)
    total: int  #: all image embeddings

    @property
    def vision_tokens(self) -> int:
        """Vision tokens before layout embeddings (the mode table's last column)."""
        return self.global_tokens + self.crop_tokens


def views(mode: str | ResolutionMode, grid: tuple[int, int] = NO_CROPS) -> tuple[View, ...]:
    """The views of one image: the global view, then ``w*h`` crops."""
    m = get_mode(mode)
    w, h = check_grid(m, grid)
    crops = () if (w, h) == NO_CROPS or m.crop_size is None else (View("crop", m.crop_size),) * (w * h)
    return (View("global", m.global_size), *crops)


def image_token_layout(mode: str | ResolutionMode, grid: tuple[int, int] = NO_CROPS) -> TokenLayout:
    """Exact embedding counts for one image in ``mode`` with crop grid ``grid`` (gundam 2x2 -> 693)."""
    m = get_mode(mode)
    w, h = check_grid(m, grid)
    g = m.global_side
    global_tokens = g * g
    newlines = g
    crop_tokens = 0
    if (w, h) != NO_CROPS:
        c = m.crop_side
        rows, cols = c * h, c * w
        crop_tokens = rows * cols
        newlines += rows
    total = global_tokens + crop_tokens + newlines + 1
    return TokenLayout(global_tokens, crop_tokens, newlines, 1, total)
