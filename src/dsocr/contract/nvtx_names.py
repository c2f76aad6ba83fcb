"""The NVTX contract: one place for the range names, domains and payloads.

The capture worker emits exactly these ranges and the analyzer reads them back, so the two
never drift. Nesting (domain ``dsocr``)::

    repeat > page > vision > sam | clip | projector
                  > prefill
                  > decode > decode_step

``repeat`` carries the repeat index as its int64 payload, ``page`` the page index and
``decode_step`` the step index. The optional module ranges (``--module-ranges``) live in a
second domain, ``dsocr.module``, named by the analytic model's module paths
(``vision.sam.blocks.3``, ``decoder.layers.5.moe``, ...).
"""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "dsocr"
MODULE_DOMAIN: Final = "dsocr.module"

REPEAT: Final = "repeat"
PAGE: Final = "page"
VISION: Final = "vision"
SAM: Final = "sam"
CLIP: Final = "clip"
PROJECTOR: Final = "projector"
PREFILL: Final = "prefill"
DECODE: Final = "decode"
DECODE_STEP: Final = "decode_step"
WARMUP: Final = "warmup"
#: On the CPU there is no cudaProfilerStart: the capture range is this NVTX range
#: (``nsys --capture-range=nvtx --nvtx-capture=capture@dsocr``).
CAPTURE: Final = "capture"

#: Every stage range, outermost first.
STAGES: Final[tuple[str, ...]] = (
    REPEAT,
    PAGE,
    VISION,
    SAM,
    CLIP,
    PROJECTOR,
    PREFILL,
    DECODE,
    DECODE_STEP,
)

#: The enclosing range each stage must sit in.
PARENT: Final[dict[str, str | None]] = {
    REPEAT: None,
    PAGE: REPEAT,
    VISION: PAGE,
    SAM: VISION,
    CLIP: VISION,
    PROJECTOR: VISION,
    PREFILL: PAGE,
    DECODE: PAGE,
    DECODE_STEP: DECODE,
}

#: The stages a report tabulates (the model's three phases and the vision parts).
TOP_STAGES: Final[tuple[str, ...]] = (VISION, PREFILL, DECODE)
VISION_PARTS: Final[tuple[str, ...]] = (SAM, CLIP, PROJECTOR)

#: Ranges whose int64 payload is an index.
PAYLOAD_INDEX: Final[dict[str, str]] = {REPEAT: "repeat", PAGE: "page", DECODE_STEP: "step"}


def qualified(name: str, domain: str | None = DOMAIN) -> str:
    """Return the range name as NVIDIA's 2023.4 report scripts print it (``domain:message``)."""
    return f"{domain}:{name}" if domain else name
