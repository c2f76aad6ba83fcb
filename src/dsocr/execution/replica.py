"""The exact-shape DeepSeek-OCR replica, built from transformers 5.x blocks (torch imported lazily).

Shapes come from :class:`dsocr.model.architecture.Architecture`; weights are seeded random
(bf16 on CUDA, float32 on the CPU by default). The blocks:

- SAM: ``DeepseekOcr2SamVisionEncoder`` with ``downsample_channels`` = the compressor's
  (512, 1024): patch embed, blocks, neck, then the two stride-2 convs (``proj``).
- CLIP-L: ``CLIPVisionModel``; the compressed SAM map replaces its patch embeddings, the class
  token is prepended and the position embeddings (bicubically interpolated to the grid, as
  the vendor's ``get_abs_pos``) are added, then ``pre_layrnorm`` and ``encoder``. The vendor's
  CLIP has no ``post_layernorm``: it is replaced by an identity, which makes the parameter
  count exact (3,336,106,240 for the full architecture).
- Projector: ``Linear(2048, 1280)`` on concat(CLIP tokens without class token, SAM tokens).
- Decoder: ``DeepseekOcr2TextModel`` (layer 0 dense, the rest MoE) and an untied ``lm_head``.
- Layout: learned ``image_newline`` after every row of each map, one ``view_separator`` after
  the global view; crops (tiled into one map) come first, as in the vendor's code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import attrs

from dsocr.contract import module_paths as mp
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import BadInput, EnvironmentProblem
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dsocr.execution.preprocess import PreparedImage

#: The parameter count of the published checkpoint (2,710 tensors, 6,672,212,480 bf16 bytes).
FULL_PARAMETERS: Final = 3_336_106_240
#: ``attn_implementation`` values the replica accepts.
ATTN_IMPLEMENTATIONS: Final = ("sdpa", "eager")

#: A factory of context managers, one per stage (``sam``, ``clip``, ``projector``); the
#: capture passes its NVTX/timing stage here, tests a recorder.
StageFn = Callable[[str], AbstractContextManager[Any]]


def _no_stage(_name: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def transformers_blocks() -> Any:
    """The transformers module with DeepSeek-OCR 2's blocks, or EnvironmentProblem naming the version."""
    try:
        import transformers
    except ImportError as exc:
        raise EnvironmentProblem(
            "transformers is not installed: the replica needs transformers >= 5.17 (pip install 'dsocr[capture]')"
        ) from exc
    try:
        from transformers.models.deepseek_ocr2 import modeling_deepseek_ocr2
    except ImportError as exc:
        raise EnvironmentProblem(
            f"transformers {transformers.__version__} has no models/deepseek_ocr2, which the replica is built "
            "from: install transformers >= 5.17 (pip install -U 'transformers>=5.17')"
        ) from exc
    return modeling_deepseek_ocr2


def resolve_dtype(device: str, dtype: Any = None) -> torch.dtype:
    """The dtype for ``device``: bf16 on CUDA, float32 elsewhere, unless ``dtype`` (name or dtype) is given."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    table |= {"float32": torch.float32, "fp32": torch.float32}
    try:
        return table[str(dtype).lower()]
    except KeyError:
        raise BadInput(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32") from None


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _configs(arch: Architecture, attn_implementation: str) -> tuple[Any, Any, Any]:
    blocks = transformers_blocks()
    from transformers import CLIPVisionConfig

    cfg = blocks  # the configuration classes are re-exported by the modeling module
    s, c, d = arch.sam, arch.clip, arch.decoder
    sam_cfg = cfg.DeepseekOcr2SamVisionConfig(
        hidden_size=s.hidden,
        output_channels=s.neck_channels,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_channels=s.in_channels,
        image_size=s.pos_grid * s.patch_size,
        patch_size=s.patch_size,
        mlp_dim=s.mlp,
        window_size=s.window,
        global_attn_indexes=list(s.global_layers),
        downsample_channels=list(s.compressor_channels),
    )
    clip_cfg = CLIPVisionConfig(
        hidden_size=c.hidden,
        intermediate_size=c.mlp,
        num_hidden_layers=c.layers,
        num_attention_heads=c.heads,
        image_size=c.image_size,
        patch_size=c.patch_size,
        layer_norm_eps=c.layer_norm_eps,
    )
    text_cfg = cfg.DeepseekOcr2TextConfig(
        vocab_size=d.vocab,
        hidden_size=d.hidden,
        intermediate_size=d.dense_intermediate,
        moe_intermediate_size=d.moe_intermediate,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        head_dim=d.head_dim,
        n_routed_experts=d.routed_experts,
        n_shared_experts=d.shared_experts,
        num_experts_per_tok=d.experts_per_token,
        max_position_embeddings=d.max_positions,
        rms_norm_eps=d.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": d.rope_theta},
        tie_word_embeddings=d.tied_embeddings,
        mlp_layer_types=["dense" if not d.is_moe(i) else "sparse" for i in range(d.layers)],
    )
    for conf in (sam_cfg, clip_cfg, text_cfg):
        conf._attn_implementation = attn_implementation
    return sam_cfg, clip_cfg, text_cfg


@attrs.define(eq=False)
class Replica:
    """DeepSeek-OCR as torch modules plus the stage functions the capture worker times."""

    arch: Architecture
    root: Any  #: nn.ModuleDict holding every part (for .parameters(), .to(), state_dict())
    sam: Any  #: DeepseekOcr2SamVisionEncoder (blocks ``layers``, ``neck``, compressor ``proj``)
    clip: Any  #: CLIPVisionModel (used through ``embeddings``, ``pre_layrnorm``, ``encoder``)
    projector: Any  #: nn.Linear(2048, 1280)
    decoder: Any  #: DeepseekOcr2TextModel
    lm_head: Any  #: nn.Linear(1280, vocab, bias=False)
    layout: Any  #: nn.Module with parameters ``image_newline`` and ``view_separator``
    device: Any
    dtype: Any
    eos_token_id: int | None = None  #: set by a real checkpoint; the replica never stops early

    # ----------------------------------------------------------------- structure
    @property
    def clip_inner(self) -> Any:
        """The CLIP vision transformer (``CLIPVisionModel.vision_model`` in older transformers)."""
        return getattr(self.clip, "vision_model", self.clip)

    def parameter_count(self) -> int:
        """Number of parameters (3,336,106,240 for the full architecture)."""
        return sum(int(p.numel()) for p in self.root.parameters())

    def module_paths(self) -> dict[str, nn.Module]:
        """The contract's module paths (``vision.sam.blocks.3``, ``decoder.layers.5.moe``, ...) -> modules.

        ``vision.clip.embeddings`` is absent: the replica adds the class and position embeddings itself.
        """
        paths: dict[str, nn.Module] = {
            mp.SAM: self.sam,
            mp.SAM_PATCH_EMBED: self.sam.patch_embed,
            mp.SAM_NECK: self.sam.neck,
            mp.SAM_COMPRESSOR: self.sam.proj,
            mp.CLIP: self.clip,
            mp.PROJECTOR: self.projector,
            mp.DECODER: self.decoder,
            mp.EMBED_TOKENS: self.decoder.embed_tokens,
            mp.DECODER_NORM: self.decoder.norm,
            mp.LM_HEAD: self.lm_head,
        }
        for i, block in enumerate(self.sam.layers):
            paths[mp.sam_block(i)] = block
        for i, layer in enumerate(self.clip_inner.encoder.layers):
            paths[mp.clip_layer(i)] = layer
        for i, layer in enumerate(self.decoder.layers):
            paths[mp.decoder_layer(i)] = layer
            paths[mp.decoder_attention(i)] = layer.self_attn
            if self.arch.decoder.is_moe(i):
                paths[mp.decoder_moe(i)] = layer.mlp
                paths[mp.decoder_moe_router(i)] = layer.mlp.gate
                paths[mp.decoder_moe_experts(i)] = layer.mlp.experts
                paths[mp.decoder_moe_shared(i)] = layer.mlp.shared_experts
            else:
                paths[mp.decoder_mlp(i)] = layer.mlp
        return paths

    # ----------------------------------------------------------------- vision
    def clip_forward(self, sam_map: torch.Tensor) -> torch.Tensor:
        """CLIP on the compressed SAM map ``(B, C, s, s)``: ``(B, 1 + s*s, hidden)`` (class token first)."""
        import torch
        import torch.nn.functional as F

        inner = self.clip_inner
        emb = inner.embeddings
        batch, _, side, _ = sam_map.shape
        patches = sam_map.flatten(2).transpose(1, 2)
        cls = emb.class_embedding.to(patches.dtype).expand(batch, 1, -1)
        pos = emb.position_embedding.weight
        src = math.isqrt(pos.shape[0] - 1)
        if src != side:
            grid = pos[1:].reshape(1, src, src, -1).permute(0, 3, 1, 2).to(torch.float32)
            grid = F.interpolate(grid, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
            pos = torch.cat([pos[:1], grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(side * side, -1)])
        hidden = torch.cat([cls, patches], dim=1) + pos.unsqueeze(0)
        hidden = inner.pre_layrnorm(hidden)
        return inner.encoder(inputs_embeds=hidden).last_hidden_state  # type: ignore[no-any-return]

    def encode_view(self, pixels: torch.Tensor, stage: StageFn | None = None) -> torch.Tensor:
        """SAM -> CLIP -> projector on a batch of same-size views ``(B, 3, S, S)``: ``(B, s*s, hidden)``."""
        import torch

        st = stage or _no_stage
        with st(names.SAM):
            sam_map = self.sam(pixels).last_hidden_state  # B, 1024, s, s
        with st(names.CLIP):
            clip_out = self.clip_forward(sam_map)
        with st(names.PROJECTOR):
            features = torch.cat([clip_out[:, 1:], sam_map.flatten(2).transpose(1, 2)], dim=-1)
            out: torch.Tensor = self.projector(features)
        return out

    def lay_out(self, global_features: torch.Tensor, crop_features: torch.Tensor | None, grid: tuple[int, int]) -> Any:
        """Image embeddings ``(n, hidden)``: tiled crops + newlines, global + newlines, separator."""
        return lay_out(self.layout.image_newline, self.layout.view_separator, global_features, crop_features, grid)

    def encode_views(self, views: PreparedImage, stage: StageFn | None = None) -> torch.Tensor:
        """Image embeddings ``(n, hidden)`` of one page: crops (one batch), then the global view, then layout."""
        crops = None
        if views.crops is not None:
            crops = self.encode_view(views.crops, stage)
        glob = self.encode_view(views.global_view, stage)
        return self.lay_out(glob, crops, views.grid)  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- decoder
    def embed_prompt(self, ids_before: torch.Tensor, image_embeds: torch.Tensor, ids_after: torch.Tensor) -> Any:
        """Prefill input ``(1, L, hidden)``: ids before the image, image embeddings, ids after (one lookup)."""
        import torch

        embed = self.decoder.embed_tokens
        n = ids_before.numel()
        text = embed(torch.cat([ids_before.reshape(-1), ids_after.reshape(-1)]).unsqueeze(0)).to(image_embeds.dtype)
        return torch.cat([text[:, :n], image_embeds.unsqueeze(0), text[:, n:]], dim=1)

    def prefill(self, input_embeds: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Decoder over the whole prompt with a fresh KV cache: (logits of the last position ``(1, vocab)``, cache)."""
        out = self.decoder(inputs_embeds=input_embeds, use_cache=True)
        logits = self.lm_head(out.last_hidden_state[:, -1:, :])
        return logits[:, -1], out.past_key_values

    def decode_step(self, token: torch.Tensor, past: Any) -> tuple[torch.Tensor, Any]:
        """One greedy step: token ids ``(1, 1)`` and the cache -> (logits ``(1, vocab)``, cache)."""
        out = self.decoder(input_ids=token.reshape(1, 1), past_key_values=past, use_cache=True)
        logits = self.lm_head(out.last_hidden_state)
        return logits[:, -1], out.past_key_values


def lay_out(
    newline: torch.Tensor,
    separator: torch.Tensor,
    global_features: torch.Tensor,
    crop_features: torch.Tensor | None,
    grid: tuple[int, int],
) -> torch.Tensor:
    """The vendor's layout: crops tiled row by row into one map, ``newline`` after every row of it and of
    the global map, crops first, then the global view, then ``separator``: ``(n, hidden)``."""
    import torch

    hidden = global_features.shape[-1]
    g = math.isqrt(global_features.shape[1])
    glob = global_features.reshape(g, g, hidden)
    glob = torch.cat([glob, newline.expand(g, 1, hidden)], dim=1).reshape(-1, hidden)
    parts = []
    if crop_features is not None:
        w, h = grid
        c = math.isqrt(crop_features.shape[1])
        tiled = crop_features.reshape(h, w, c, c, hidden).permute(0, 2, 1, 3, 4).reshape(h * c, w * c, hidden)
        tiled = torch.cat([tiled, newline.expand(h * c, 1, hidden)], dim=1).reshape(-1, hidden)
        parts.append(tiled)
    parts += [glob, separator.reshape(1, hidden)]
    return torch.cat(parts, dim=0)


def build_replica(
    arch: Architecture = DEEPSEEK_OCR,
    *,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> Replica:
    """Build the replica for ``arch`` on ``device`` with seeded random weights, in eval mode.

    ``device="meta"`` builds it without memory (for parameter counts); ``dtype`` defaults to bf16
    on CUDA and float32 elsewhere; ``attn_implementation`` is ``sdpa`` or ``eager`` (for FLOP counting).
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise BadInput(f"attn_implementation {attn_implementation!r} is unknown: use one of {ATTN_IMPLEMENTATIONS}")
    import torch
    from torch import nn
    from transformers import CLIPVisionModel

    blocks = transformers_blocks()
    sam_cfg, clip_cfg, text_cfg = _configs(arch, attn_implementation)
    torch_dtype = resolve_dtype(device, dtype)
    hidden = arch.decoder.hidden
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(torch_dtype):
        sam = blocks.DeepseekOcr2SamVisionEncoder(sam_cfg)
        clip = CLIPVisionModel(clip_cfg)
        inner = getattr(clip, "vision_model", clip)
        inner.post_layernorm = nn.Identity()  # the vendor's CLIP has none
        projector = nn.Linear(arch.projector.in_features, arch.projector.out_features)
        decoder = blocks.DeepseekOcr2TextModel(text_cfg)
        lm_head = nn.Linear(hidden, arch.decoder.vocab, bias=False)
        layout = nn.Module()
        std = hidden**-0.5
        layout.image_newline = nn.Parameter(torch.randn(hidden) * std)
        layout.view_separator = nn.Parameter(torch.randn(hidden) * std)
    root = nn.ModuleDict(
        {"sam": sam, "clip": clip, "projector": projector, "decoder": decoder, "lm_head": lm_head, "layout": layout}
    )
    root.eval()
    root.requires_grad_(False)
    return Replica(
        arch=arch,
        root=root,
        sam=sam,
        clip=clip,
        projector=projector,
        decoder=decoder,
        lm_head=lm_head,
        layout=layout,
        device=torch.device(device),
        dtype=torch_dtype,
    )
