"""Resolution modes: crop-grid selection (the vendor's rule) and exact image-token layouts."""

from __future__ import annotations

import pytest

from dsocr.contract.errors import BadInput
from dsocr.model.modes import (
    MODES,
    check_grid,
    get_mode,
    image_token_layout,
    parse_grid,
    select_crop_grid,
    views,
)


@pytest.mark.parametrize(
    ("mode", "total", "vision"),
    [
        ("tiny", 8 * 9 + 1, 64),
        ("small", 10 * 11 + 1, 100),
        ("base", 16 * 17 + 1, 256),
        ("large", 20 * 21 + 1, 400),
    ],
)
def test_global_only_modes(mode: str, total: int, vision: int) -> None:
    layout = image_token_layout(mode)
    assert layout.total == total
    assert layout.vision_tokens == vision
    assert layout.crop_tokens == 0
    assert layout.separator_tokens == 1
    assert layout.newline_tokens == total - vision - 1


def test_gundam_2x2_is_693() -> None:
    layout = image_token_layout("gundam", (2, 2))
    assert (layout.global_tokens, layout.crop_tokens, layout.newline_tokens, layout.separator_tokens) == (
        256,
        400,
        16 + 20,
        1,
    )
    assert layout.total == 693
    assert image_token_layout("gundam").total == 273  # no crops: the global view alone


@pytest.mark.parametrize(
    ("grid", "crops_part"), [((3, 1), 10 * 31), ((1, 3), 30 * 11), ((3, 3), 30 * 31), ((2, 4), 40 * 21)]
)
def test_gundam_crop_grids(grid: tuple[int, int], crops_part: int) -> None:
    layout = image_token_layout("gundam", grid)
    assert layout.total == 273 + crops_part
    assert layout.vision_tokens == 256 + 100 * grid[0] * grid[1]


def test_gundam_m_uses_1024_crops() -> None:
    layout = image_token_layout("gundam-m", (2, 2))
    assert layout.vision_tokens == 400 + 256 * 4
    assert layout.total == 421 + 32 * 33
    assert [v.size for v in views("gundam-m", (2, 2))] == [1280, 1024, 1024, 1024, 1024]


def test_views_per_mode() -> None:
    assert [(v.kind, v.size, v.tokens) for v in views("gundam", (3, 1))] == [("global", 1024, 256)] + [
        ("crop", 640, 100)
    ] * 3
    assert [(v.kind, v.size) for v in views("tiny")] == [("global", 512)]
    assert MODES["tiny"].global_fit == "resize" and MODES["base"].global_fit == "pad"


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((640, 640), (1, 1)),  # no larger than 640 on both sides: no crops
        ((600, 300), (1, 1)),
        ((641, 100), (6, 1)),  # aspect 6.41: 6/1 is closest
        ((1000, 1400), (2, 3)),  # portrait page, 0.714 -> 2/3
        ((1654, 2339), (2, 3)),  # A4 at 200 dpi
        ((800, 600), (3, 2)),  # 1.333 -> 3/2
        ((900, 1200), (2, 3)),  # 0.75: 2/3 beats the 1/2 vs 1/1 tie
        ((1600, 800), (2, 1)),  # ratio 2 exact, area 1.28M: the first (2x1) stays
        ((2000, 1000), (4, 2)),  # ... area 2M > 0.5*640^2*8: the later 4x2 wins the tie
        ((1280, 1280), (2, 2)),  # square: 3x3 ties, area 1.64M <= 0.5*640^2*9
        ((2000, 2000), (3, 3)),  # ... area 4M > 1.84M: 3x3 wins
        ((700, 1400), (1, 2)),
        ((1000, 2000), (2, 4)),  # area 2M > 0.5*640^2*8
        ((1000, 800), (2, 2)),  # 1.25: 2x2 and 3x2 tie; area 0.8M keeps 2x2
        ((1250, 1000), (3, 2)),  # ... area 1.25M > 0.5*640^2*6 = 1.23M: 3x2 wins
        ((6400, 640), (9, 1)),
    ],
)
def test_select_crop_grid_gundam(size: tuple[int, int], grid: tuple[int, int]) -> None:
    assert select_crop_grid(*size, "gundam") == grid


def test_ratio_2_tie_needs_area() -> None:
    # 2/1 (product 2) and 4/2 (product 8) have the same ratio; 4x2 needs area > 0.5*640^2*8.
    assert select_crop_grid(1800, 900, "gundam") == (2, 1)
    assert select_crop_grid(1900, 950, "gundam") == (4, 2)


@pytest.mark.parametrize("mode", ["tiny", "small", "base", "large"])
def test_non_cropping_modes_never_crop(mode: str) -> None:
    assert select_crop_grid(4000, 1000, mode) == (1, 1)
    assert not get_mode(mode).crops_allowed


def test_gundam_m_tie_uses_its_crop_size() -> None:
    # Ratio 1: 3x3 wins only if area > 0.5 * 1024^2 * 9 = 4.72M.
    assert select_crop_grid(2000, 2000, "gundam-m") == (2, 2)
    assert select_crop_grid(2200, 2200, "gundam-m") == (3, 3)


def test_candidate_grids() -> None:
    grids = get_mode("gundam").candidate_grids()
    assert all(2 <= w * h <= 9 for w, h in grids)
    assert len(grids) == len(set(grids)) == 22
    assert [w * h for w, h in grids] == sorted(w * h for w, h in grids)


def test_parse_grid() -> None:
    assert parse_grid("2x3") == (2, 3)
    assert parse_grid(" 3X1 ") == (3, 1)
    assert parse_grid("none") == (1, 1)
    for bad in ("3x", "x2", "2x2x2", "0x3", "ax2"):
        with pytest.raises(BadInput, match=r"is not WxH with positive integers: write e\.g\. 2x2"):
            parse_grid(bad)


def test_bad_inputs_one_line() -> None:
    with pytest.raises(
        BadInput, match=r"unknown resolution mode 'huge': use one of tiny, small, base, large, gundam, gundam-m"
    ):
        get_mode("huge")
    with pytest.raises(BadInput, match=r"mode base does not crop, but crop grid 2x2 was given"):
        check_grid("base", (2, 2))
    with pytest.raises(BadInput, match=r"crop grid 5x2 has 10 crops, mode gundam allows 2\.\.9"):
        image_token_layout("gundam", (5, 2))
    with pytest.raises(BadInput, match=r"image size 0x10 is not positive"):
        select_crop_grid(0, 10)


def test_parse_size() -> None:
    from dsocr.model.modes import parse_size

    assert parse_size("1654x2339") == (1654, 2339)
    with pytest.raises(BadInput, match=r"image size '12x' is not WxH in pixels: write e\.g\. 1654x2339"):
        parse_size("12x")
