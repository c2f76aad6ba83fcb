"""One declarative table: module classes of the replica (transformers) and of the vendor's code -> analytic kinds.

A module whose class is not in the table is reported as ``unclassified``, never dropped. Some
classes are ambiguous on their own (transformers' ``DeepseekOcr2TextMLP`` is both layer 0's
dense MLP and the MoE's shared experts; a plain ``Linear`` is also ``lm_head``): the module's
name then decides (``CONTEXT_RULES``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

UNCLASSIFIED: Final = "unclassified"

#: class name -> analytic kind (replica first, then the vendor's remote code, then leaves).
MODULE_CLASSES: Final[dict[str, str]] = {
    # transformers (the replica): SAM
    "DeepseekOcr2SamVisionEncoder": "sam",
    "DeepseekOcr2SamPatchEmbeddings": "sam_patch_embed",
    "DeepseekOcr2SamVisionLayer": "sam_block",
    "DeepseekOcr2SamVisionAttention": "sam_attention",
    "DeepseekOcr2SamVisionSdpaAttention": "sam_attention",
    "DeepseekOcr2SamMLPBlock": "sam_mlp",
    "DeepseekOcr2SamVisionNeck": "sam_neck",
    "DeepseekOcr2SamVisionProj": "sam_compressor",
    "DeepseekOcr2SamLayerNorm": "layernorm",
    # transformers: CLIP
    "CLIPVisionModel": "clip",
    "CLIPVisionTransformer": "clip",
    "CLIPVisionEmbeddings": "clip_embeddings",
    "CLIPEncoder": "clip_encoder",
    "CLIPEncoderLayer": "clip_layer",
    "CLIPAttention": "clip_attention",
    "CLIPSdpaAttention": "clip_attention",
    "CLIPMLP": "clip_mlp",
    # transformers: decoder
    "DeepseekOcr2TextModel": "decoder",
    "DeepseekOcr2TextDecoderLayer": "decoder_layer",
    "DeepseekOcr2TextAttention": "decoder_attention",
    "DeepseekOcr2TextMLP": "dense_mlp",
    "DeepseekOcr2TextMoe": "moe",
    "DeepseekOcr2TextTopkRouter": "moe_router",
    "DeepseekOcr2TextExperts": "moe_experts",
    "DeepseekOcr2TextRMSNorm": "rmsnorm",
    "DeepseekOcr2TextRotaryEmbedding": "rotary",
    # the vendor's DeepEncoder (SAM + CLIP) and projector
    "ImageEncoderViT": "sam",
    "PatchEmbed": "sam_patch_embed",
    "Block": "sam_block",
    "Attention": "sam_attention",
    "MLPBlock": "sam_mlp",
    "LayerNorm2d": "layernorm",
    "VitModel": "clip",
    "NoTPTransformer": "clip_encoder",
    "NoTPTransformerBlock": "clip_layer",
    "NoTPAttention": "clip_attention",
    "NoTPFeedForward": "clip_mlp",
    "MlpProjector": "projector",
    # the vendor's DeepSeek-V2 decoder
    "DeepseekV2Model": "decoder",
    "DeepseekV2DecoderLayer": "decoder_layer",
    "DeepseekV2Attention": "decoder_attention",
    "DeepseekV2FlashAttention2": "decoder_attention",
    "DeepseekV2MLP": "dense_mlp",
    "DeepseekV2MoE": "moe",
    "MoEGate": "moe_router",
    "DeepseekV2RMSNorm": "rmsnorm",
    "DeepseekV2RotaryEmbedding": "rotary",
    # framework leaves
    "Linear": "linear",
    "Conv2d": "conv2d",
    "LayerNorm": "layernorm",
    "Embedding": "embedding",
    "GELU": "activation",
    "GELUActivation": "activation",
    "QuickGELUActivation": "activation",
    "SiLU": "activation",
    "SiLUActivation": "activation",
    "Identity": "identity",
    "Dropout": "identity",
    "ModuleList": "container",
    "ModuleDict": "container",
    "Sequential": "container",
}

#: (kind from the class, substring of the module's name) -> kind in that context.
CONTEXT_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    ("dense_mlp", "shared_experts", "moe_shared_experts"),
    ("linear", "lm_head", "lm_head"),
    ("linear", "projector", "projector"),
    ("embedding", "embed_tokens", "embedding"),
    ("moe_experts", "experts", "moe_experts"),
    (UNCLASSIFIED, "layout", "layout"),  # the replica's bare nn.Module holding image_newline/view_separator
)


@attrs.frozen
class Classified:
    """One named module and its analytic kind (``unclassified`` when the table has no entry)."""

    name: str  #: the module's qualified name in its model
    class_name: str
    kind: str


def classify(class_name: str, name: str = "") -> str:
    """The analytic kind of a module of class ``class_name`` named ``name``."""
    kind = MODULE_CLASSES.get(class_name, UNCLASSIFIED)
    for base, fragment, contextual in CONTEXT_RULES:
        if kind == base and fragment in name and (base != UNCLASSIFIED or class_name == "Module"):
            return contextual
    return kind


def classify_modules(named: Iterable[tuple[str, str]]) -> list[Classified]:
    """Classify ``(name, class name)`` pairs (e.g. from ``model.named_modules()``), keeping every one."""
    return [Classified(name, cls, classify(cls, name)) for name, cls in named]


def unclassified(items: Iterable[Classified]) -> list[Classified]:
    """The modules the table could not map."""
    return [c for c in items if c.kind == UNCLASSIFIED]
