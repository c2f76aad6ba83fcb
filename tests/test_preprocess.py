"""Preprocessing: global view (resize or pad), crops, normalization, output shapes."""

from __future__ import annotations

import pytest
from PIL import Image

from dsocr.contract.errors import BadInput
from dsocr.execution.preprocess import PAD_COLOR, crop_images, global_view_image, preprocess, resolve_grid

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("mode", "size", "global_shape", "crops_shape", "grid", "tokens"),
    [
        ("tiny", (1240, 1754), (1, 3, 512, 512), None, (1, 1), 73),
        ("small", (1754, 1240), (1, 3, 640, 640), None, (1, 1), 111),
        ("base", (1240, 1754), (1, 3, 1024, 1024), None, (1, 1), 273),
        ("large", (1240, 1754), (1, 3, 1280, 1280), None, (1, 1), 421),
        ("gundam", (1300, 1300), (1, 3, 1024, 1024), (4, 3, 640, 640), (2, 2), 693),
        ("gundam", (1240, 1754), (1, 3, 1024, 1024), (6, 3, 640, 640), (2, 3), 30 * 21 + 273),
        ("gundam", (3000, 700), (1, 3, 1024, 1024), (4, 3, 640, 640), (4, 1), 10 * 41 + 273),
        ("gundam", (640, 480), (1, 3, 1024, 1024), None, (1, 1), 273),
        ("gundam-m", (2100, 1000), (1, 3, 1280, 1280), (2, 3, 1024, 1024), (2, 1), 16 * 33 + 421),
    ],
)
def test_output_shapes_for_modes_and_aspect_ratios(mode, size, global_shape, crops_shape, grid, tokens) -> None:
    p = preprocess(Image.new("RGB", size, (255, 255, 255)), mode)
    assert tuple(p.global_view.shape) == global_shape
    assert p.global_view.dtype == torch.float32
    assert (None if p.crops is None else tuple(p.crops.shape)) == crops_shape
    assert p.grid == grid
    assert p.image_tokens == tokens
    assert p.source_size == size


def test_normalization_maps_white_to_one_black_to_minus_one_and_pads_with_the_mean() -> None:
    img = Image.new("RGB", (400, 800), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 400, 400))  # top half black
    p = preprocess(img, "base")  # fitted to 512x1024 and centred: 256 px of padding each side
    g = p.global_view[0]
    assert float(g[:, 100, 512].min()) == -1.0  # black
    assert float(g[:, 900, 512].max()) == 1.0  # white
    pad = (PAD_COLOR[0] / 255 - 0.5) / 0.5
    assert float(g[0, 500, 10]) == pytest.approx(pad, abs=1e-6)  # left padding, mean colour
    assert PAD_COLOR == (127, 127, 127)


def test_tiny_and_small_stretch_the_page_to_the_square() -> None:
    img = Image.new("RGB", (300, 900), (0, 0, 0))
    view = global_view_image(img, "small")
    assert view.size == (640, 640)
    assert view.getpixel((5, 320)) == (0, 0, 0)  # stretched, no padding at the sides


def test_crops_are_cut_row_by_row() -> None:
    img = Image.new("RGB", (2000, 1000), (255, 0, 0))
    img.paste((0, 0, 255), (1000, 0, 2000, 500))  # top right blue
    img.paste((0, 255, 0), (0, 500, 1000, 1000))  # bottom left green
    crops = crop_images(img, "gundam", (2, 2))
    assert [c.size for c in crops] == [(640, 640)] * 4
    assert [c.getpixel((320, 320)) for c in crops] == [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 0)]


def test_crop_policy_none_and_fixed_grid() -> None:
    assert resolve_grid(2000, 1000, "gundam", "none") == (1, 1)
    assert resolve_grid(2000, 1000, "gundam", "3x1") == (3, 1)
    assert resolve_grid(2000, 1000, "gundam", "auto") == (4, 2)  # ratio tie: the larger grid wins
    p = preprocess(Image.new("L", (2000, 1000), 128), "gundam", "3x3")
    assert tuple(p.crops.shape) == (9, 3, 640, 640)
    with pytest.raises(BadInput, match="mode tiny does not crop"):
        resolve_grid(2000, 1000, "tiny", "2x2")
    with pytest.raises(BadInput, match="crop grid 5x2 has 10 crops"):
        resolve_grid(2000, 1000, "gundam", "5x2")
