"""Kernel signatures: what each analytic primitive runs, at which shape, as a hashable key.

Every primitive of :mod:`dsocr.analytic.primitives` tags one of the operations it returns with a
:class:`Kernel` (its kind and the exact parameters); the other operations of the same primitive
carry none (the signature covers them). A calibration (``dsocr calibrate``) times each signature
alone on the GPU with the PyTorch operators the replica runs; :mod:`dsocr.analytic.calibration`
turns those times into a calibrated prediction. The kinds and their parameters are listed in
docs/analytic-model.md ("Calibrated prediction").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

Param = int | str

#: Every kind and its parameters, in key order.
KINDS: Final[dict[str, tuple[str, ...]]] = {
    "linear": ("rows", "in", "out", "bias"),
    "conv2d": ("batch", "cin", "cout", "size", "kernel", "stride", "padding", "bias"),
    "layer_norm": ("rows", "dim", "layout"),
    "rms_norm": ("rows", "dim"),
    "activation": ("fn", "elements"),
    "gated": ("elements",),
    "elementwise": ("elements", "inputs"),
    "copy": ("elements", "pattern", "batch", "side", "dim", "window"),
    "embedding": ("rows", "vocab", "dim"),
    "attention": ("batch", "heads", "kv_heads", "q", "kv", "head_dim", "causal", "impl", "mask"),
    "rel_pos": ("batch", "heads", "side", "head_dim", "table"),
    "rope": ("rows", "heads", "kv_heads", "head_dim"),
    "kv_append": ("batch", "kv_heads", "new", "past", "head_dim"),
    "router": ("rows", "hidden", "experts", "top_k"),
    "routed_experts": ("rows", "hidden", "inter", "experts", "top_k"),
}


@attrs.frozen
class Kernel:
    """One primitive at one shape: ``kind`` and its parameters (names and order from :data:`KINDS`)."""

    kind: str
    params: tuple[tuple[str, Param], ...]

    @classmethod
    def of(cls, kind: str, **params: Param) -> Kernel:
        """Build a signature; every parameter of the kind must be given, in any order."""
        names = KINDS.get(kind)
        if names is None:
            raise ValueError(f"unknown kernel kind {kind!r}: known kinds are {', '.join(KINDS)}")
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in names]
        if missing or extra:
            raise ValueError(f"kernel {kind}: missing parameters {missing}, unknown parameters {extra}")
        return cls(kind, tuple((n, params[n]) for n in names))

    @property
    def key(self) -> str:
        """Canonical text key, e.g. ``linear[rows=4096,in=768,out=2304,bias=1]``."""
        return f"{self.kind}[{','.join(f'{n}={v}' for n, v in self.params)}]"

    def param(self, name: str) -> Param:
        """The value of parameter ``name``."""
        for n, v in self.params:
            if n == name:
                return v
        raise KeyError(f"kernel {self.kind} has no parameter {name!r}")

    def as_dict(self) -> dict[str, Param]:
        """Parameters as a dict (for JSON)."""
        return dict(self.params)


def parse_key(key: str) -> Kernel:
    """Inverse of :attr:`Kernel.key` (values that are all digits become ints)."""
    kind, _, rest = key.partition("[")
    if not rest.endswith("]"):
        raise ValueError(f"kernel key {key!r} is not of the form kind[name=value,...]")
    params: dict[str, Param] = {}
    for part in filter(None, rest[:-1].split(",")):
        name, _, value = part.partition("=")
        params[name] = int(value) if value.lstrip("-").isdigit() else value
    return Kernel.of(kind, **params)


def unique(kernels: Iterable[Kernel]) -> list[Kernel]:
    """Distinct signatures in first-seen order."""
    seen: dict[str, Kernel] = {}
    for k in kernels:
        seen.setdefault(k.key, k)
    return list(seen.values())
