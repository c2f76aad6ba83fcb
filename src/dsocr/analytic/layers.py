"""Domain modules composed from primitives: SAM, neck, compressor, CLIP, projector, decoder, lm_head.

Each builder returns a :class:`~dsocr.analytic.tree.Module` named with the contract's module
paths (the NVTX range names of ``--module-ranges``) for one call on the given shapes. The
shapes follow the transformers replica (dsocr.execution.replica), which matches the vendor's code:
SAM window attention runs its qkv/proj linears on the padded windows; CLIP sees the compressed
SAM map plus a class token; the decoder's attention is causal multi-head with RoPE.
"""

from __future__ import annotations

import attrs

from dsocr.analytic import primitives as p
from dsocr.analytic.cost import Op
from dsocr.analytic.tree import Module
from dsocr.contract import module_paths as mp
from dsocr.model.architecture import ClipConfig, DecoderConfig, ProjectorConfig, SamConfig


# ----------------------------------------------------------------------------- vision
def sam_block(i: int, cfg: SamConfig, side: int, batch: int, *, b: int, impl: p.AttnImpl) -> Module:
    """One SAM ViT block on ``batch`` maps of ``side x side`` tokens (windowed unless ``i`` is global)."""
    d = cfg.hidden
    head_dim = d // cfg.heads
    tokens = batch * side * side
    is_global = i in cfg.global_layers
    win_shape = (batch, side, d, cfg.window)
    ops: list[Op] = [p.layer_norm("norm1", tokens, d, b)]
    if is_global:
        attn_tokens, seqs, win = tokens, batch, side
        table = 2 * cfg.pos_grid - 1  # the checkpoint's table, interpolated to other grids
    else:
        padded, n_win = p.windows(side, cfg.window)
        attn_tokens, seqs, win = batch * padded * padded, batch * n_win, cfg.window
        table = 2 * cfg.window - 1
        ops.append(p.copy("window_partition", attn_tokens * d, b, pattern="window_partition", window=win_shape))
    seq = win * win
    ops.append(p.linear("qkv", attn_tokens, d, 3 * d, bias=True, b=b))
    ops.extend(p.attention(seqs, cfg.heads, seq, seq, head_dim, b=b, impl=impl, mask=True))
    ops.append(p.rel_pos(seqs, cfg.heads, win, win, head_dim, b=b, table=table))
    ops.append(p.linear("proj", attn_tokens, d, d, bias=True, b=b))
    if not is_global:
        ops.append(p.copy("window_unpartition", tokens * d, b, pattern="window_unpartition", window=win_shape))
    ops += [
        p.elementwise("residual1", tokens * d, b),
        p.layer_norm("norm2", tokens, d, b),
        p.linear("lin1", tokens, d, cfg.mlp, bias=True, b=b),
        p.activation("gelu", "gelu", tokens * cfg.mlp, b),
        p.linear("lin2", tokens, cfg.mlp, d, bias=True, b=b),
        p.elementwise("residual2", tokens * d, b),
    ]
    kind = "sam_block_global" if is_global else "sam_block_windowed"
    return Module(mp.sam_block(i), kind, ops=tuple(ops))


def sam_neck(cfg: SamConfig, side: int, batch: int, *, b: int) -> Module:
    """Neck: conv 1x1 768->256, LayerNorm2d, conv 3x3 256->256, LayerNorm2d."""
    c = cfg.neck_channels
    tokens = batch * side * side
    return Module(
        mp.SAM_NECK,
        "sam_neck",
        ops=(
            p.conv2d("conv1", batch, cfg.hidden, c, side, kernel=1, bias=False, b=b),
            p.layer_norm("norm1", tokens, c, b, layout="2d"),
            p.conv2d("conv2", batch, c, c, side, kernel=3, padding=1, bias=False, b=b),
            p.layer_norm("norm2", tokens, c, b, layout="2d"),
        ),
    )


def compressor(cfg: SamConfig, side: int, batch: int, *, b: int) -> Module:
    """The 16x token compressor: two 3x3 stride-2 convolutions 256->512->1024, bias-free."""
    c1, c2 = cfg.compressor_channels
    mid = p.conv_out(side, 3, 2, 1)
    return Module(
        mp.SAM_COMPRESSOR,
        "sam_compressor",
        ops=(
            p.conv2d("conv1", batch, cfg.neck_channels, c1, side, kernel=3, stride=2, padding=1, bias=False, b=b),
            p.conv2d("conv2", batch, c1, c2, mid, kernel=3, stride=2, padding=1, bias=False, b=b),
        ),
    )


def sam(cfg: SamConfig, view_size: int, batch: int, *, b: int, impl: p.AttnImpl) -> Module:
    """SAM ViT-B with neck and compressor on ``batch`` square views of ``view_size`` pixels."""
    side = view_size // cfg.patch_size
    tokens = batch * side * side
    patch = Module(
        mp.SAM_PATCH_EMBED,
        "sam_patch_embed",
        ops=(
            p.conv2d(
                "proj",
                batch,
                cfg.in_channels,
                cfg.hidden,
                view_size,
                kernel=cfg.patch_size,
                stride=cfg.patch_size,
                bias=True,
                b=b,
            ),
        ),
    )
    pos = p.with_params(
        p.elementwise("pos_embed", tokens * cfg.hidden, b, category="embedding"), cfg.pos_grid**2 * cfg.hidden, b
    )
    blocks = tuple(sam_block(i, cfg, side, batch, b=b, impl=impl) for i in range(cfg.layers))
    return Module(
        mp.SAM,
        "sam",
        ops=(pos,),
        children=(patch, *blocks, sam_neck(cfg, side, batch, b=b), compressor(cfg, side, batch, b=b)),
    )


def sam_output_side(cfg: SamConfig, view_size: int) -> int:
    """Tokens per side of the compressed SAM map."""
    side = view_size // cfg.patch_size
    return p.conv_out(p.conv_out(side, 3, 2, 1), 3, 2, 1)


def clip_layer(i: int, cfg: ClipConfig, seq: int, batch: int, *, b: int, impl: p.AttnImpl) -> Module:
    """One CLIP-L encoder layer on ``batch`` sequences of ``seq`` tokens (QuickGELU MLP)."""
    d = cfg.hidden
    tokens = batch * seq
    ops = (
        p.layer_norm("layer_norm1", tokens, d, b),
        p.linear("qkv_proj", tokens, d, 3 * d, bias=True, b=b),
        *p.attention(batch, cfg.heads, seq, seq, d // cfg.heads, b=b, impl=impl),
        p.linear("out_proj", tokens, d, d, bias=True, b=b),
        p.elementwise("residual1", tokens * d, b),
        p.layer_norm("layer_norm2", tokens, d, b),
        p.linear("fc1", tokens, d, cfg.mlp, bias=True, b=b),
        p.activation("quick_gelu", "quick_gelu", tokens * cfg.mlp, b),
        p.linear("fc2", tokens, cfg.mlp, d, bias=True, b=b),
        p.elementwise("residual2", tokens * d, b),
    )
    return Module(mp.clip_layer(i), "clip_layer", ops=ops)


def clip(cfg: ClipConfig, side: int, batch: int, *, b: int, impl: p.AttnImpl) -> Module:
    """CLIP-L on ``batch`` compressed SAM maps of ``side x side`` (+ class token), with pre-LayerNorm."""
    d = cfg.hidden
    seq = side * side + 1
    tokens = batch * seq
    grid = cfg.image_size // cfg.patch_size
    emb_ops = (
        p.copy("flatten_cat_class", tokens * d, b, category="embedding"),
        p.parameters("class_embedding", d),
        p.with_params(
            p.elementwise("position_embedding", tokens * d, b, category="embedding"), (grid * grid + 1) * d, b
        ),
        p.parameters("patch_embedding_unused", d * 3 * cfg.patch_size * cfg.patch_size),
    )
    embeddings = Module(mp.CLIP_EMBEDDINGS, "clip_embeddings", ops=emb_ops)
    layers = tuple(clip_layer(i, cfg, seq, batch, b=b, impl=impl) for i in range(cfg.layers))
    return Module(
        mp.CLIP,
        "clip",
        ops=(p.layer_norm("pre_layrnorm", tokens, d, b),),
        children=(embeddings, *layers),
    )


def projector(cfg: ProjectorConfig, side: int, batch: int, *, b: int) -> Module:
    """Concatenate CLIP (without class token) and SAM features, then Linear 2048->1280."""
    tokens = batch * side * side
    return Module(
        mp.PROJECTOR,
        "projector",
        ops=(
            p.copy("concat", tokens * cfg.in_features, b),
            p.linear("linear", tokens, cfg.in_features, cfg.out_features, bias=True, b=b),
        ),
    )


def layout(hidden: int, embeddings: int, batch: int, *, b: int) -> Op:
    """Assembling one image's embeddings with ``image_newline``/``view_separator`` (2 x hidden params)."""
    return p.with_params(p.copy("layout", batch * embeddings * hidden, b, category="embedding"), 2 * hidden, b)


# ----------------------------------------------------------------------------- decoder
@attrs.frozen
class Pass:
    """One decoder forward: ``batch`` sequences of ``q_len`` new positions attending to ``kv_len``."""

    batch: int
    q_len: int
    kv_len: int
    decode: bool  #: K/V of earlier positions come from the cache

    @property
    def tokens(self) -> int:
        """Rows every per-token layer runs on."""
        return self.batch * self.q_len


def decoder_attention(i: int, cfg: DecoderConfig, ps: Pass, *, b: int, impl: p.AttnImpl) -> Module:
    """Causal multi-head attention with RoPE and a KV cache."""
    t = ps.tokens
    q_dim, kv_dim = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    ops = (
        p.linear("q_proj", t, cfg.hidden, q_dim, bias=False, b=b),
        p.linear("k_proj", t, cfg.hidden, kv_dim, bias=False, b=b),
        p.linear("v_proj", t, cfg.hidden, kv_dim, bias=False, b=b),
        p.rope(t, cfg.heads, cfg.kv_heads, cfg.head_dim, b),
        p.kv_append(ps.batch, cfg.kv_heads, ps.q_len, cfg.head_dim, b, past=ps.kv_len - ps.q_len),
        *p.attention(
            ps.batch,
            cfg.heads,
            ps.q_len,
            ps.kv_len,
            cfg.head_dim,
            b=b,
            impl=impl,
            causal=True,
            kv_heads=cfg.kv_heads,
            kv_from_cache=ps.decode,
        ),
        p.linear("o_proj", t, q_dim, cfg.hidden, bias=False, b=b),
    )
    return Module(mp.decoder_attention(i), "decoder_attention", ops=ops)


def dense_mlp(i: int, cfg: DecoderConfig, ps: Pass, *, b: int) -> Module:
    """Layer ``i``'s dense SwiGLU MLP."""
    return Module(
        mp.decoder_mlp(i), "dense_mlp", ops=p.swiglu_mlp("", ps.tokens, cfg.hidden, cfg.dense_intermediate, b)
    )


def moe(i: int, cfg: DecoderConfig, ps: Pass, *, b: int) -> Module:
    """Layer ``i``'s MoE: router, top-k routed experts, shared experts, and their sum."""
    t = ps.tokens
    router = Module(
        mp.decoder_moe_router(i),
        "moe_router",
        ops=p.router(t, cfg.hidden, cfg.routed_experts, cfg.experts_per_token, b),
    )
    experts = Module(
        mp.decoder_moe_experts(i),
        "moe_experts",
        ops=p.routed_experts(t, cfg.hidden, cfg.moe_intermediate, cfg.routed_experts, cfg.experts_per_token, b),
    )
    shared = Module(
        mp.decoder_moe_shared(i), "moe_shared_experts", ops=p.swiglu_mlp("", t, cfg.hidden, cfg.shared_intermediate, b)
    )
    return Module(
        mp.decoder_moe(i),
        "moe",
        ops=(p.elementwise("add_shared", t * cfg.hidden, b),),
        children=(router, experts, shared),
    )


def decoder_layer(i: int, cfg: DecoderConfig, ps: Pass, *, b: int, impl: p.AttnImpl) -> Module:
    """Decoder layer ``i``: RMSNorm, attention, RMSNorm, dense MLP or MoE, two residual adds."""
    t = ps.tokens
    ffn = moe(i, cfg, ps, b=b) if cfg.is_moe(i) else dense_mlp(i, cfg, ps, b=b)
    return Module(
        mp.decoder_layer(i),
        "decoder_layer_moe" if cfg.is_moe(i) else "decoder_layer_dense",
        ops=(
            p.rms_norm("input_layernorm", t, cfg.hidden, b),
            p.elementwise("residual1", t * cfg.hidden, b),
            p.rms_norm("post_attention_layernorm", t, cfg.hidden, b),
            p.elementwise("residual2", t * cfg.hidden, b),
        ),
        children=(decoder_attention(i, cfg, ps, b=b, impl=impl), ffn),
    )


def decoder(
    cfg: DecoderConfig, ps: Pass, *, b: int, impl: p.AttnImpl, looked_up: int | None = None, merged: int = 0
) -> Module:
    """The text decoder for one pass: embedding lookup, layers, final RMSNorm.

    ``looked_up`` is the number of token ids embedded per sequence (default: all ``q_len``);
    ``merged`` the image embeddings spliced into each sequence (prefill).
    """
    t = ps.tokens
    ids = ps.q_len if looked_up is None else looked_up
    emb_ops: tuple[Op, ...] = (p.embedding_lookup("lookup", ps.batch * ids, cfg.vocab, cfg.hidden, b),)
    if merged:
        emb_ops += (p.copy("merge_image_embeddings", t * cfg.hidden, b, category="embedding"),)
    embed = Module(mp.EMBED_TOKENS, "embedding", ops=emb_ops)
    layers = tuple(decoder_layer(i, cfg, ps, b=b, impl=impl) for i in range(cfg.layers))
    norm = Module(mp.DECODER_NORM, "rmsnorm", ops=(p.rms_norm("norm", t, cfg.hidden, b),))
    return Module(mp.DECODER, "decoder", children=(embed, *layers, norm))


def lm_head(cfg: DecoderConfig, rows: int, *, b: int) -> Module:
    """The untied output projection on ``rows`` positions."""
    return Module(mp.LM_HEAD, "lm_head", ops=(p.linear("lm_head", rows, cfg.hidden, cfg.vocab, bias=False, b=b),))
