"""CLIP-L as the vendor's ``deepencoder.py`` runs it (``VitModel``), in plain torch.

The compressed SAM map takes the place of the patch embeddings (the ``patch_embedding`` conv is
kept as a parameter, as in the checkpoint, and never run); the class token is prepended and the
position embeddings (looked up through the ``position_ids`` buffer, bicubically resized to the
grid as ``get_abs_pos``) are added, then ``pre_layrnorm`` and the encoder layers (fused
``qkv_proj``, SDPA without mask, quick-GELU MLP). There is no ``post_layernorm``: the vendor's CLIP
has none.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.architecture import ClipConfig


def get_abs_pos(abs_pos: torch.Tensor, tgt_size: int) -> torch.Tensor:
    """The vendor's ``get_abs_pos``: ``(1, 1 + g*g, C)`` position table resized to ``tgt_size`` positions."""
    dim = abs_pos.size(-1)
    table = abs_pos.squeeze(0)
    cls_token, old = table[:1], table[1:]
    src = int(math.sqrt(table.shape[0] - 1))
    tgt = int(math.sqrt(tgt_size))
    if src == tgt:
        return abs_pos
    grid = old.view(1, src, src, dim).permute(0, 3, 1, 2).contiguous().to(torch.float32)
    new = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", antialias=True, align_corners=False).to(abs_pos.dtype)
    new = new.permute(0, 2, 3, 1).view(tgt * tgt, dim)
    return torch.cat([cls_token, new], dim=0).view(1, tgt * tgt + 1, dim)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)`` (the vendor's scripted function, run eagerly here)."""
    return x * torch.sigmoid(1.702 * x)


def attend(xqkv: torch.Tensor) -> torch.Tensor:
    """``NoTPAttention`` between its two linears: ``(B, L, 3, heads, d)`` -> ``(B, L, heads * d)`` (SDPA, no mask)."""
    bsz, seqlen = xqkv.shape[:2]
    xq, xk, xv = (t.squeeze(2).permute(0, 2, 1, 3) for t in torch.split(xqkv, 1, dim=2))
    out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=None)
    return out.permute(0, 2, 1, 3).reshape(bsz, seqlen, -1)


class ClipEmbeddings(nn.Module):
    """Class token + the given patch map + (resized) position embeddings."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(cfg.hidden))
        self.patch_embedding = nn.Conv2d(3, cfg.hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        positions = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(positions, cfg.hidden)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)

    def forward(self, patch_embeds: torch.Tensor) -> torch.Tensor:
        batch = patch_embeds.shape[0]
        patches = patch_embeds.flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.expand(batch, 1, -1)
        embeddings = torch.cat([class_embeds, patches], dim=1)
        return embeddings + get_abs_pos(self.position_embedding(self.position_ids), embeddings.size(1))


class ClipAttention(nn.Module):
    """Fused ``qkv_proj``, SDPA (no mask, as the vendor's ``NoTPAttention``), ``out_proj``."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.num_heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.qkv_proj = nn.Linear(cfg.hidden, cfg.hidden * 3)
        self.out_proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        xqkv = self.qkv_proj(x).view(bsz, seqlen, 3, self.num_heads, self.head_dim)
        return self.out_proj(attend(xqkv))  # type: ignore[no-any-return]


class ClipMlp(nn.Module):
    """``fc2(quick_gelu(fc1(x)))``."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.mlp)
        self.fc2 = nn.Linear(cfg.mlp, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))  # type: ignore[no-any-return]


class ClipLayer(nn.Module):
    """Pre-norm encoder layer."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.self_attn = ClipAttention(cfg)
        self.mlp = ClipMlp(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.layer_norm1(x))
        return h + self.mlp(self.layer_norm2(h))  # type: ignore[no-any-return]


class ClipEncoder(nn.Module):
    """The stack of encoder layers (the vendor's ``transformer``)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(cfg) for _ in range(cfg.layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


class ClipVision(nn.Module):
    """CLIP-L on a SAM map ``(B, 1024, s, s)``: ``(B, 1 + s*s, 1024)``, class token first."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.transformer = ClipEncoder(cfg)

    def forward(self, sam_map: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.pre_layrnorm(self.embeddings(sam_map)))  # type: ignore[no-any-return]
