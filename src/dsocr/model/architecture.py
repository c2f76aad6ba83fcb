"""DeepSeek-OCR's architecture as data (what the analytic model counts from it: docs/analytic-model.md).

These attrs classes are the single source of the model's shapes: the replica is built from
them, the analytic model counts FLOPs and bytes from them, and tests shrink them.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SamConfig:
    """SAM ViT-B/16 image encoder, its neck and the 16x compressor."""

    patch_size: int = 16
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    mlp: int = 3072
    window: int = 14
    global_layers: tuple[int, ...] = (2, 5, 8, 11)
    pos_grid: int = 64  #: absolute position embedding grid (interpolated for other sizes)
    in_channels: int = 3
    neck_channels: int = 256
    compressor_channels: tuple[int, int] = (512, 1024)  #: two 3x3 stride-2 convs


@attrs.frozen
class ClipConfig:
    """CLIP-L/14 encoder fed with the compressed SAM map as its patch embeddings."""

    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    mlp: int = 4096
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-5


@attrs.frozen
class ProjectorConfig:
    """Linear projector: concat(CLIP tokens, SAM tokens) -> decoder width."""

    in_features: int = 2048
    out_features: int = 1280


@attrs.frozen
class DecoderConfig:
    """DeepSeek-3B-MoE text decoder (layer 0 dense, the rest MoE)."""

    vocab: int = 129_280
    hidden: int = 1280
    layers: int = 12
    heads: int = 10
    kv_heads: int = 10
    head_dim: int = 128
    dense_layers: int = 1  #: the first ``dense_layers`` layers use a dense SwiGLU MLP
    dense_intermediate: int = 6848
    routed_experts: int = 64
    experts_per_token: int = 6
    moe_intermediate: int = 896
    shared_experts: int = 2  #: fused into one SwiGLU of ``shared_experts * moe_intermediate``
    max_positions: int = 8192
    rope_theta: float = 10_000.0
    rms_eps: float = 1e-6
    tied_embeddings: bool = False

    @property
    def shared_intermediate(self) -> int:
        """Width of the fused shared-expert SwiGLU (2 x 896 = 1792)."""
        return self.shared_experts * self.moe_intermediate

    def is_moe(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` is a MoE layer."""
        return layer >= self.dense_layers


@attrs.frozen
class Architecture:
    """The whole DeepSeek-OCR network."""

    sam: SamConfig = attrs.field(factory=SamConfig)
    clip: ClipConfig = attrs.field(factory=ClipConfig)
    projector: ProjectorConfig = attrs.field(factory=ProjectorConfig)
    decoder: DecoderConfig = attrs.field(factory=DecoderConfig)
    name: str = "deepseek-ai/DeepSeek-OCR"

    def shrunk(self, sam_layers: int = 2, clip_layers: int = 2, decoder_layers: int = 2) -> Architecture:
        """A copy with fewer layers (same widths), for fast CPU tests."""
        globals_kept = tuple(g for g in self.sam.global_layers if g < sam_layers) or (sam_layers - 1,)
        return attrs.evolve(
            self,
            sam=attrs.evolve(self.sam, layers=sam_layers, global_layers=globals_kept),
            clip=attrs.evolve(self.clip, layers=clip_layers),
            decoder=attrs.evolve(self.decoder, layers=decoder_layers),
            name=f"{self.name} (shrunk {sam_layers}/{clip_layers}/{decoder_layers})",
        )


#: The architecture of the published checkpoint.
DEEPSEEK_OCR = Architecture()
