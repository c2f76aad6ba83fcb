"""Module paths: the names shared by the analytic model and the ``--module-ranges`` NVTX ranges.

The capture names each medium-granularity module's NVTX range (domain ``dsocr.module``) with
exactly the path the analytic model gives that module, so measured GPU time per module can
be put beside its prediction.
"""

from __future__ import annotations

from typing import Final

VISION: Final = "vision"
SAM: Final = "vision.sam"
SAM_PATCH_EMBED: Final = "vision.sam.patch_embed"
SAM_NECK: Final = "vision.sam.neck"
SAM_COMPRESSOR: Final = "vision.sam.compressor"
CLIP: Final = "vision.clip"
CLIP_EMBEDDINGS: Final = "vision.clip.embeddings"
PROJECTOR: Final = "vision.projector"
DECODER: Final = "decoder"
EMBED_TOKENS: Final = "decoder.embed_tokens"
DECODER_NORM: Final = "decoder.norm"
LM_HEAD: Final = "lm_head"


def sam_block(i: int) -> str:
    """``vision.sam.blocks.{i}``."""
    return f"{SAM}.blocks.{i}"


def clip_layer(i: int) -> str:
    """``vision.clip.layers.{i}``."""
    return f"{CLIP}.layers.{i}"


def decoder_layer(i: int) -> str:
    """``decoder.layers.{i}``."""
    return f"{DECODER}.layers.{i}"


def decoder_attention(i: int) -> str:
    """``decoder.layers.{i}.attention``."""
    return f"{decoder_layer(i)}.attention"


def decoder_mlp(i: int) -> str:
    """``decoder.layers.{i}.mlp`` (the dense SwiGLU of layer 0)."""
    return f"{decoder_layer(i)}.mlp"


def decoder_moe(i: int) -> str:
    """``decoder.layers.{i}.moe`` (router + routed experts + shared experts)."""
    return f"{decoder_layer(i)}.moe"


def decoder_moe_router(i: int) -> str:
    """``decoder.layers.{i}.moe.router``."""
    return f"{decoder_moe(i)}.router"


def decoder_moe_experts(i: int) -> str:
    """``decoder.layers.{i}.moe.experts`` (the routed experts)."""
    return f"{decoder_moe(i)}.experts"


def decoder_moe_shared(i: int) -> str:
    """``decoder.layers.{i}.moe.shared_experts``."""
    return f"{decoder_moe(i)}.shared_experts"
