"""Test-only stand-in for ``torchvision.transforms.functional.InterpolationMode``."""

from enum import Enum


class InterpolationMode(Enum):
    """The names torchvision defines."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"
