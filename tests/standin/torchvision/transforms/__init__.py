"""Test-only stand-in for ``torchvision.transforms`` (ToTensor, Normalize, Compose), same semantics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ToTensor:
    """PIL image (H, W, C uint8) -> float tensor (C, H, W) in [0, 1], as torchvision's."""

    def __call__(self, pic: Any) -> torch.Tensor:
        arr = np.array(pic, dtype=np.uint8, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


class Normalize:
    """``(x - mean) / std`` per channel, as torchvision's."""

    def __init__(self, mean: Any, std: Any, inplace: bool = False) -> None:
        self.mean, self.std = mean, std

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


class Compose:
    """Apply the transforms in order."""

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x
