"""One declarative table: module classes of dsocr's replica and of the vendor's code -> analytic kinds.

A module whose class is not in the table is reported as ``unclassified``, never dropped. Some
classes are ambiguous on their own (the replica's ``SwiGluMlp`` and the vendor's ``DeepseekV2MLP``
are both layer 0's dense MLP and the MoE's shared experts; a plain ``Linear`` is also ``lm_head``):
the module's name then decides (``CONTEXT_RULES``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

UNCLASSIFIED: Final = "unclassified"

#: class name -> analytic kind (replica first, then the vendor's remote code, then leaves).
MODULE_CLASSES: Final[dict[str, str]] = {
    # dsocr's replica (dsocr.execution.replica_*): SAM
    "SamEncoder": "sam",
    "SamPatchEmbed": "sam_patch_embed",
    "SamBlock": "sam_block",
    "SamAttention": "sam_attention",
    "SamMlp": "sam_mlp",
    "SamNeck": "sam_neck",
    "SamCompressor": "sam_compressor",
    "SamLayerNorm2d": "layernorm",
    # the replica: CLIP
    "ClipVision": "clip",
    "ClipEmbeddings": "clip_embeddings",
    "ClipEncoder": "clip_encoder",
    "ClipLayer": "clip_layer",
    "ClipAttention": "clip_attention",
    "ClipMlp": "clip_mlp",
    # the replica: decoder
    "Decoder": "decoder",
    "DecoderLayer": "decoder_layer",
    "DecoderAttention": "decoder_attention",
    "SwiGluMlp": "dense_mlp",
    "Moe": "moe",
    "MoeRouter": "moe_router",
    "MoeExperts": "moe_experts",
    "RMSNorm": "rmsnorm",
    "RotaryEmbedding": "rotary",
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
    "CLIPVisionEmbeddings": "clip_embeddings",
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
    # its attention with use_mla=False: transformers 4.46.3's Llama classes
    "LlamaAttention": "decoder_attention",
    "LlamaFlashAttention2": "decoder_attention",
    "LlamaRotaryEmbedding": "rotary",
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
