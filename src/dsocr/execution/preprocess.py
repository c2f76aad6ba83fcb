"""Image preprocessing as the vendor does it, on PIL images (torch imported lazily).

One page becomes a global view (``tiny``/``small``: stretched to the square; the other modes:
resized to fit and padded to the square with the mean colour, ``ImageOps.pad``), plus, in
``gundam``/``gundam-m``, the image resized to ``w x h`` crops and cut row by row into square
crops. Pixels are scaled to [0, 1] and normalized with mean 0.5 and std 0.5 per channel (the
vendor's ``normalize``), giving float32 tensors of shape ``(1, 3, S, S)`` and ``(n, 3, C, C)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs
from PIL import Image, ImageOps

from dsocr.contract.errors import BadInput
from dsocr.model.modes import (
    NO_CROPS,
    ResolutionMode,
    TokenLayout,
    check_grid,
    get_mode,
    image_token_layout,
    parse_grid,
    select_crop_grid,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The vendor's normalization (``transforms.Normalize(mean, std)`` with 0.5 per channel).
MEAN: Final = (0.5, 0.5, 0.5)
STD: Final = (0.5, 0.5, 0.5)
#: Colour of the padding around the global view (``int(mean * 255)``).
PAD_COLOR: Final = tuple(int(m * 255) for m in MEAN)
#: Crop policies besides an explicit ``WxH`` grid.
CROPS_AUTO: Final = "auto"
CROPS_NONE: Final = "none"


@attrs.frozen
class PreparedImage:
    """One page ready for the vision encoder."""

    global_view: Any  #: torch.Tensor (1, 3, S, S)
    crops: Any  #: torch.Tensor (w*h, 3, C, C), or None without crops
    grid: tuple[int, int]  #: crop grid (w, h); (1, 1) = no crops
    mode: str
    source_size: tuple[int, int]  #: the page's (width, height) in pixels
    layout: TokenLayout  #: image embeddings this page contributes

    @property
    def image_tokens(self) -> int:
        """Embeddings the decoder sees for this page (gundam 2x2: 693)."""
        return self.layout.total

    def to(self, device: Any, dtype: Any) -> PreparedImage:
        """A copy with its tensors on ``device`` in ``dtype``."""
        crops = None if self.crops is None else self.crops.to(device=device, dtype=dtype)
        return attrs.evolve(self, global_view=self.global_view.to(device=device, dtype=dtype), crops=crops)


def resolve_grid(width: int, height: int, mode: str | ResolutionMode, crops: str = CROPS_AUTO) -> tuple[int, int]:
    """The crop grid for a page: ``auto`` (vendor rule), ``none``, or an explicit ``WxH``."""
    m = get_mode(mode)
    policy = crops.strip().lower()
    if policy == CROPS_AUTO:
        return select_crop_grid(width, height, m)
    if policy == CROPS_NONE:
        return NO_CROPS
    return check_grid(m, parse_grid(policy))


def global_view_image(image: Image.Image, mode: str | ResolutionMode) -> Image.Image:
    """The square global view: stretched (tiny, small) or fitted and padded (base, large, gundam)."""
    m = get_mode(mode)
    rgb = image.convert("RGB")
    size = (m.global_size, m.global_size)
    if m.global_fit == "resize":
        return rgb.resize(size)  # Pillow's default filter (bicubic), as the vendor's infer() resizes
    return ImageOps.pad(rgb, size, color=PAD_COLOR)


def crop_images(image: Image.Image, mode: str | ResolutionMode, grid: tuple[int, int]) -> list[Image.Image]:
    """The page resized to ``w x h`` crops and cut into them row by row (empty without crops)."""
    m = get_mode(mode)
    w, h = check_grid(m, grid)
    if (w, h) == NO_CROPS or m.crop_size is None:
        return []
    c = m.crop_size
    resized = image.convert("RGB").resize((c * w, c * h))
    return [resized.crop((col * c, row * c, (col + 1) * c, (row + 1) * c)) for row in range(h) for col in range(w)]


def _normalized(images: list[Image.Image]) -> np.ndarray:
    import numpy as np

    pixels = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / np.float32(255.0)  # n, H, W, 3
    mean, std = np.asarray(MEAN, dtype=np.float32), np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Normalized float32 tensor ``(n, 3, H, W)`` of same-size RGB images."""
    import torch

    return torch.from_numpy(_normalized(images))


def preprocess(image: Image.Image, mode: str | ResolutionMode, crops: str = CROPS_AUTO) -> PreparedImage:
    """Global view and crops of one page, as float32 tensors on the CPU."""
    m = get_mode(mode)
    width, height = image.size
    if width < 1 or height < 1:
        raise BadInput(f"image of size {width}x{height} is empty: give a page of at least 1x1 pixels")
    grid = resolve_grid(width, height, m, crops)
    pieces = crop_images(image, m, grid)
    return PreparedImage(
        global_view=to_tensor([global_view_image(image, m)]),
        crops=to_tensor(pieces) if pieces else None,
        grid=grid,
        mode=m.name,
        source_size=(width, height),
        layout=image_token_layout(m, grid),
    )
