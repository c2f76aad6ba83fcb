"""SAM ViT-B as the vendor's ``deepencoder.py`` runs it, in plain torch: the replica's first vision stage.

Op for op as the vendor's ``ImageEncoderViT``: a 16x16 patch convolution, the absolute position
embedding (bicubically interpolated when the grid differs, ``get_abs_pos_sam``), blocks with
windowed (14x14, zero-padded) or global attention and decomposed relative positions added as an
SDPA bias (``add_decomposed_rel_pos``), the neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d)
and the two stride-2 convolutions (``net_2``, ``net_3``) that give the 1024-channel map CLIP
reads. The vendor's SAM always uses SDPA (its attention has no other path); so does this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.architecture import SamConfig

#: LayerNorm epsilon of SAM's blocks and neck (``partial(nn.LayerNorm, eps=1e-6)``, ``LayerNorm2d``).
SAM_NORM_EPS = 1e-6


def interpolate_pos_embed(pos: torch.Tensor, side: int) -> torch.Tensor:
    """``get_abs_pos_sam``: the ``(1, g, g, C)`` table bicubically resized to ``side`` (float32 math)."""
    if pos.size(1) == side:
        return pos
    grid = F.interpolate(
        pos.permute(0, 3, 1, 2).to(torch.float32),
        size=(side, side),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    ).to(pos.dtype)
    return grid.permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(B, H, W, C)`` -> ``(B * windows, window, window, C)`` (zero-padded to a multiple) and the padded size."""
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """The inverse of :func:`window_partition`: ``(B, H, W, C)`` without the padding."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """The relative-position rows for every (query, key) offset; the table linearly resized if needed."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.to(torch.float32).reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        ).to(rel_pos.dtype)
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[relative.long()]


def add_decomposed_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The height and width parts of the decomposed relative-position bias (the vendor's two einsums)."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh).unsqueeze(-1).reshape(b, q_h * q_w, k_h, 1)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw).unsqueeze(-2).reshape(b, q_h * q_w, 1, k_w)
    return rel_h, rel_w


def rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, batch: int, heads: int, h: int, w: int
) -> torch.Tensor:
    """The SDPA bias ``(batch, heads, h*w, h*w)`` of queries ``(batch*heads, h*w, d)``: height + width parts."""
    rel_h, rel_w = add_decomposed_rel_pos(q, rel_pos_h, rel_pos_w, (h, w), (h, w))
    rel_h = rel_h.view(batch, heads, rel_h.size(1), rel_h.size(2), rel_h.size(3))
    rel_w = rel_w.view(batch, heads, rel_w.size(1), rel_w.size(2), rel_w.size(3))
    return (rel_h + rel_w).view(batch, heads, rel_h.size(2), rel_h.size(3) * rel_w.size(4))


class SamPatchEmbed(nn.Module):
    """The 16x16 stride-16 patch convolution; output channels-last ``(B, h, w, C)``."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x)
        return out.permute(0, 2, 3, 1)


class SamAttention(nn.Module):
    """Multi-head attention with decomposed relative positions (fused ``qkv``), SDPA with the bias as mask."""

    def __init__(self, dim: int, heads: int, input_size: int) -> None:
        super().__init__()
        self.num_heads = heads
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * heads, h * w, -1).unbind(0)
        bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, b, heads, h, w)
        q = q.view(b, heads, h * w, -1)
        k = k.view(b, heads, h * w, -1)
        v = v.view(b, heads, h * w, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)  # type: ignore[no-any-return]


class SamMlp(nn.Module):
    """``lin2(GELU(lin1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))  # type: ignore[no-any-return]


class SamBlock(nn.Module):
    """Pre-norm transformer block; windowed attention unless ``window`` is 0 (global)."""

    def __init__(self, cfg: SamConfig, window: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=SAM_NORM_EPS)
        self.attn = SamAttention(cfg.hidden, cfg.heads, window if window else cfg.pos_grid)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=SAM_NORM_EPS)
        self.mlp = SamMlp(cfg.hidden, cfg.mlp)
        self.window_size = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, padded, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))  # type: ignore[no-any-return]


class SamLayerNorm2d(nn.Module):
    """The vendor's channels-first LayerNorm (mean/var over dim 1, written out as the vendor does)."""

    def __init__(self, channels: int, eps: float = SAM_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SamNeck(nn.Sequential):
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (indices 0..3 as the vendor's ``nn.Sequential``)."""

    def __init__(self, cfg: SamConfig) -> None:
        c = cfg.neck_channels
        super().__init__(
            nn.Conv2d(cfg.hidden, c, kernel_size=1, bias=False),
            SamLayerNorm2d(c),
            nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
            SamLayerNorm2d(c),
        )


class SamCompressor(nn.Module):
    """The vendor's ``net_2`` and ``net_3``: two 3x3 stride-2 convolutions (16x fewer tokens)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        mid, out = cfg.compressor_channels
        self.net_2 = nn.Conv2d(cfg.neck_channels, mid, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = nn.Conv2d(mid, out, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.net_2(x)
        return self.net_3(x2.clone())  # type: ignore[no-any-return]  # the vendor's clone (one copy kernel)


class SamEncoder(nn.Module):
    """SAM ViT-B with neck and compressor: pixels ``(B, 3, S, S)`` -> map ``(B, 1024, S/64, S/64)``."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.patch_embed = SamPatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_grid, cfg.pos_grid, cfg.hidden))
        self.blocks = nn.ModuleList(
            SamBlock(cfg, 0 if i in cfg.global_layers else cfg.window) for i in range(cfg.layers)
        )
        self.neck = SamNeck(cfg)
        self.compressor = SamCompressor(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + interpolate_pos_embed(self.pos_embed, x.size(1))
        for block in self.blocks:
            x = block(x)
        x = self.neck(x.permute(0, 3, 1, 2))
        return self.compressor(x)  # type: ignore[no-any-return]
