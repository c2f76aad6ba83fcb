"""The replica's execution variants that need no torch to check: decode modes and their refusals (docs/variants.md)."""

from __future__ import annotations

from typing import Final

from dsocr.contract.errors import BadInput

#: ``--decode`` values: today's dynamic-cache loop, one CUDA graph per step, torch.compile reduce-overhead.
DECODE_EAGER: Final = "eager"
DECODE_GRAPH: Final = "graph"
DECODE_COMPILE: Final = "compile"
DECODE_MODES: Final = (DECODE_EAGER, DECODE_GRAPH, DECODE_COMPILE)


def check_decode(decode: str, *, moe: str, device: str, vendor: bool = False) -> None:
    """BadInput in one line when ``decode`` is unknown or cannot run with these settings."""
    if decode not in DECODE_MODES:
        raise BadInput(f"decode {decode!r} is unknown: use one of {', '.join(DECODE_MODES)}")
    if decode == DECODE_EAGER:
        return
    if vendor:
        raise BadInput(
            f"--decode {decode} needs dsocr's replica: the checkpoint's own generate (--trust-remote-code) "
            "keeps a dynamic cache; drop --trust-remote-code or use --decode eager"
        )
    if moe != "grouped":
        raise BadInput(
            f"--decode {decode} needs --moe grouped: the loop copies expert counts to the host in every MoE layer, "
            "which a CUDA graph cannot capture"
        )
    if not str(device).startswith("cuda"):
        raise BadInput(f"--decode {decode} needs a CUDA device (CUDA graphs): use --device cuda or --decode eager")
