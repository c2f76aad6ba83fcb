"""Primitive operations with exact FLOP, byte and parameter counts for given shapes.

Every function returns :class:`~dsocr.analytic.cost.Op` objects. Shapes are explicit: a
``tokens`` argument is the number of rows a layer is applied to (batch included), ``b`` the
bytes per element of the workload's dtype. FLOPs per element of the non-matmul operations are
conventions (constants below, documented in docs/analytic-model.md); matmul and convolution
FLOPs are exact (2 per multiply-accumulate), which is what ``torch.utils.flop_counter`` counts.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import attrs

from dsocr.analytic.cost import Category, Cost, Op
from dsocr.analytic.signature import Kernel

#: FLOPs per element of the elementwise and reducing operations.
LAYERNORM_FLOPS: Final = 7  #: mean, centre, square, sum, scale by rstd, affine mul + add
RMSNORM_FLOPS: Final = 4  #: square, sum, scale by rstd, weight
SOFTMAX_FLOPS: Final = 6  #: scale, max, subtract, exp, sum, divide (per score)
ROUTER_SOFTMAX_FLOPS: Final = 5  #: softmax without the scale
REL_POS_ADD_FLOPS: Final = 2  #: the height and width terms added to each score
ROPE_FLOPS: Final = 3  #: x*cos + rotate(x)*sin, per rotated element
ACTIVATION_FLOPS: Final[dict[str, int]] = {"gelu": 8, "quick_gelu": 5, "silu": 4}
GATED_FLOPS: Final = ACTIVATION_FLOPS["silu"] + 1  #: SwiGLU's silu(gate) * up

Activation = Literal["gelu", "quick_gelu", "silu"]
AttnImpl = Literal["sdpa", "eager"]


def linear(name: str, tokens: int, in_features: int, out_features: int, *, bias: bool, b: int) -> Op:
    """``y = x W^T (+ bias)`` over ``tokens`` rows."""
    weights = in_features * out_features + (out_features if bias else 0)
    return Op(
        name,
        "matmul",
        Cost(
            tensor_flops=2 * tokens * in_features * out_features,
            other_flops=tokens * out_features if bias else 0,
            weight_read_bytes=weights * b,
            read_bytes=tokens * in_features * b,
            write_bytes=tokens * out_features * b,
            params=weights,
            act_bytes=tokens * (in_features + out_features) * b,
        ),
        ((Kernel.of("linear", rows=tokens, **{"in": in_features}, out=out_features, bias=int(bias)), 1.0),),
    )


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a convolution."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d(
    name: str,
    batch: int,
    in_channels: int,
    out_channels: int,
    size: int,
    *,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool,
    b: int,
) -> Op:
    """A square 2-D convolution on ``batch`` maps of ``size x size``."""
    out = conv_out(size, kernel, stride, padding)
    weights = out_channels * in_channels * kernel * kernel + (out_channels if bias else 0)
    outputs = batch * out_channels * out * out
    inputs = batch * in_channels * size * size
    return Op(
        name,
        "convolution",
        Cost(
            tensor_flops=2 * outputs * in_channels * kernel * kernel,
            other_flops=outputs if bias else 0,
            weight_read_bytes=weights * b,
            read_bytes=inputs * b,
            write_bytes=outputs * b,
            params=weights,
            act_bytes=(inputs + outputs) * b,
        ),
        (
            (
                Kernel.of(
                    "conv2d",
                    batch=batch,
                    cin=in_channels,
                    cout=out_channels,
                    size=size,
                    kernel=kernel,
                    stride=stride,
                    padding=padding,
                    bias=int(bias),
                ),
                1.0,
            ),
        ),
    )


def _elementwise_cost(elements: int, flops_per_element: int, inputs: int, b: int, params: int = 0) -> Cost:
    return Cost(
        other_flops=flops_per_element * elements,
        weight_read_bytes=params * b,
        read_bytes=inputs * elements * b,
        write_bytes=elements * b,
        params=params,
        act_bytes=(inputs + 1) * elements * b,
    )


def layer_norm(name: str, tokens: int, dim: int, b: int, *, layout: Literal["last", "2d"] = "last") -> Op:
    """LayerNorm over the last dim (``last``) or channels-first LayerNorm2d (``2d``): ``tokens`` rows of ``dim``."""
    return Op(
        name,
        "normalization",
        _elementwise_cost(tokens * dim, LAYERNORM_FLOPS, 1, b, params=2 * dim),
        ((Kernel.of("layer_norm", rows=tokens, dim=dim, layout=layout), 1.0),),
    )


def rms_norm(name: str, tokens: int, dim: int, b: int) -> Op:
    """RMSNorm with weight over ``tokens`` rows of ``dim``."""
    return Op(
        name,
        "normalization",
        _elementwise_cost(tokens * dim, RMSNORM_FLOPS, 1, b, params=dim),
        ((Kernel.of("rms_norm", rows=tokens, dim=dim), 1.0),),
    )


def activation(name: str, kind: Activation, elements: int, b: int) -> Op:
    """GELU, QuickGELU or SiLU over ``elements`` values."""
    return Op(
        name,
        "activation",
        _elementwise_cost(elements, ACTIVATION_FLOPS[kind], 1, b),
        ((Kernel.of("activation", fn=kind, elements=elements), 1.0),),
    )


def gated(name: str, elements: int, b: int) -> Op:
    """SwiGLU's elementwise part ``silu(gate) * up`` producing ``elements`` values."""
    return Op(
        name,
        "activation",
        _elementwise_cost(elements, GATED_FLOPS, 2, b),
        ((Kernel.of("gated", elements=elements), 1.0),),
    )


def elementwise(
    name: str, elements: int, b: int, *, inputs: int = 2, flops: int = 1, category: Category = "other"
) -> Op:
    """A generic elementwise operation (residual add, scaling, ...): ``flops`` per output element."""
    return Op(
        name,
        category,
        _elementwise_cost(elements, flops, inputs, b),
        ((Kernel.of("elementwise", elements=elements, inputs=inputs), 1.0),),
    )


CopyPattern = Literal["concat", "window_partition", "window_unpartition"]


def copy(
    name: str,
    elements: int,
    b: int,
    *,
    category: Category = "other",
    pattern: CopyPattern = "concat",
    window: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Op:
    """A data movement (padding, concatenation, permutation made contiguous): no FLOPs.

    ``pattern`` names what the replica does; the window patterns give ``window = (batch, side,
    dim, window)`` of SAM's window partition of ``batch`` maps of ``side x side x dim``.
    """
    batch, side, dim, win = window
    sig = Kernel.of("copy", elements=elements, pattern=pattern, batch=batch, side=side, dim=dim, window=win)
    return Op(name, category, _elementwise_cost(elements, 0, 1, b), ((sig, 1.0),))


def parameters(name: str, numel: int, *, category: Category = "embedding") -> Op:
    """Parameters held by a module but not read by any counted operation (e.g. CLIP's unused patch conv)."""
    return Op(name, category, Cost(params=numel))


def with_params(op: Op, params: int, b: int) -> Op:
    """``op`` owning ``params`` parameters it reads once per call (e.g. a position-embedding table)."""
    return attrs.evolve(
        op, cost=attrs.evolve(op.cost, params=params, weight_read_bytes=op.cost.weight_read_bytes + params * b)
    )


def embedding_lookup(name: str, tokens: int, vocab: int, dim: int, b: int) -> Op:
    """Token embedding lookup: reads one row per token of a ``vocab x dim`` table."""
    rows = min(tokens, vocab)
    return Op(
        name,
        "embedding",
        Cost(
            weight_read_bytes=rows * dim * b,
            read_bytes=tokens * 8,  # int64 ids
            write_bytes=tokens * dim * b,
            params=vocab * dim,
            act_bytes=tokens * dim * b,
        ),
        ((Kernel.of("embedding", rows=tokens, vocab=vocab, dim=dim), 1.0),),
    )


def causal_pairs(q_len: int, kv_len: int) -> int:
    """(query, key) pairs a causal mask keeps when the last ``q_len`` of ``kv_len`` positions attend."""
    past = kv_len - q_len
    return q_len * past + q_len * (q_len + 1) // 2


def attention(
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    *,
    b: int,
    impl: AttnImpl,
    causal: bool = False,
    kv_heads: int | None = None,
    kv_from_cache: bool = False,
    mask: bool = False,
) -> tuple[Op, ...]:
    """Scaled dot-product attention of ``batch`` sequences (or windows).

    ``eager`` materializes the scores (``scores``, ``softmax``, ``context``) and computes every
    pair, masked or not; ``sdpa`` is one fused kernel reading Q, K and V once and, when causal,
    skipping the masked pairs. ``kv_from_cache`` counts the K/V reads as KV-cache traffic.
    ``mask`` marks an additive float mask passed in (SAM's relative-position bias): its reads are
    counted by :func:`rel_pos`; the signature records it.
    """
    kvh = heads if kv_heads is None else kv_heads
    q_elems = batch * heads * q_len * head_dim
    kv_elems = 2 * batch * kvh * kv_len * head_dim
    full = q_len * kv_len
    pairs = causal_pairs(q_len, kv_len) if causal and impl == "sdpa" else full
    per_head_pairs = batch * heads * pairs
    sig = Kernel.of(
        "attention",
        batch=batch,
        heads=heads,
        kv_heads=kvh,
        q=q_len,
        kv=kv_len,
        head_dim=head_dim,
        causal=int(causal),
        impl=impl,
        mask=int(mask),
    )
    if impl == "sdpa":
        kv = kv_elems * b
        fused = Cost(
            tensor_flops=4 * per_head_pairs * head_dim,
            other_flops=SOFTMAX_FLOPS * per_head_pairs,
            read_bytes=q_elems * b + (0 if kv_from_cache else kv),
            kv_read_bytes=kv if kv_from_cache else 0,
            write_bytes=q_elems * b,
            act_bytes=(2 * q_elems + kv_elems) * b,
        )
        return (Op("attention", "attention", fused, ((sig, 1.0),)),)
    scores = batch * heads * full
    half = kv_elems // 2 * b  # K or V
    qk = Cost(
        tensor_flops=2 * per_head_pairs * head_dim,
        read_bytes=q_elems * b + (0 if kv_from_cache else half),
        kv_read_bytes=half if kv_from_cache else 0,
        write_bytes=scores * b,
        act_bytes=(q_elems + kv_elems // 2 + scores) * b,
    )
    soft = Cost(
        other_flops=SOFTMAX_FLOPS * scores,
        read_bytes=scores * b,
        write_bytes=scores * b,
        act_bytes=2 * scores * b,
    )
    av = Cost(
        tensor_flops=2 * per_head_pairs * head_dim,
        read_bytes=scores * b + (0 if kv_from_cache else half),
        kv_read_bytes=half if kv_from_cache else 0,
        write_bytes=q_elems * b,
        act_bytes=(scores + kv_elems // 2 + q_elems) * b,
    )
    return (
        Op("scores", "attention", qk, ((sig, 1.0),)),
        Op("softmax", "attention", soft),
        Op("context", "attention", av),
    )


def rel_pos(batch: int, heads: int, q_side: int, k_side: int, head_dim: int, *, b: int, table: int) -> Op:
    """SAM's decomposed relative-position terms for square ``q_side x q_side`` queries.

    Two einsums (``bhwc,hkc->bhwk`` and ``bhwc,wkc->bhwk``, matmul FLOPs) and two adds per
    score; ``table`` is the length of each axis' learned table (2 * window - 1 or 2 * grid - 1).
    """
    queries = batch * heads * q_side * q_side
    scores = queries * k_side * k_side
    return Op(
        "rel_pos",
        "attention",
        Cost(
            tensor_flops=2 * 2 * queries * k_side * head_dim,
            other_flops=REL_POS_ADD_FLOPS * scores,
            weight_read_bytes=2 * table * head_dim * b,
            read_bytes=queries * head_dim * b + scores * b,
            write_bytes=scores * b,
            params=2 * table * head_dim,
            act_bytes=2 * scores * b,
        ),
        ((Kernel.of("rel_pos", batch=batch, heads=heads, side=q_side, head_dim=head_dim, table=table), 1.0),),
    )


def rope(tokens: int, heads: int, kv_heads: int, head_dim: int, b: int) -> Op:
    """Rotary position embedding applied to the queries and keys of ``tokens`` rows."""
    elements = tokens * (heads + kv_heads) * head_dim
    sig = Kernel.of("rope", rows=tokens, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    return Op("rope", "embedding", _elementwise_cost(elements, ROPE_FLOPS, 1, b), ((sig, 1.0),))


def kv_append(batch: int, kv_heads: int, new: int, head_dim: int, b: int, *, past: int = 0) -> Op:
    """Writing ``new`` positions of K and V into a cache holding ``past`` positions."""
    elements = 2 * batch * kv_heads * new * head_dim
    sig = Kernel.of("kv_append", batch=batch, kv_heads=kv_heads, new=new, past=past, head_dim=head_dim)
    return Op(
        "kv_append",
        "attention",
        Cost(read_bytes=elements * b, kv_write_bytes=elements * b, act_bytes=2 * elements * b),
        ((sig, 1.0),),
    )


def router(tokens: int, hidden: int, experts: int, top_k: int, b: int) -> tuple[Op, ...]:
    """MoE router: a bias-free linear to ``experts`` logits, softmax, top-k."""
    gate = linear("router_logits", tokens, hidden, experts, bias=False, b=b)
    logits = tokens * experts
    soft = Op(
        "router_softmax",
        "routing",
        Cost(other_flops=ROUTER_SOFTMAX_FLOPS * logits, read_bytes=logits * 4, write_bytes=logits * 4),
    )
    topk = Op(
        "router_topk",
        "routing",
        Cost(other_flops=logits, read_bytes=logits * 4, write_bytes=tokens * top_k * (4 + 8)),
    )
    sig = Kernel.of("router", rows=tokens, hidden=hidden, experts=experts, top_k=top_k)
    return Op("router_logits", "routing", gate.cost, ((sig, 1.0),)), soft, topk


def experts_touched(assignments: int, experts: int, top_k: int) -> float:
    """Expected number of distinct experts hit by ``assignments / top_k`` tokens under uniform routing."""
    tokens = assignments / top_k
    if tokens <= 1:
        return float(min(assignments, experts))
    miss: float = (1.0 - top_k / experts) ** tokens
    return experts * (1.0 - miss)


def routed_experts(tokens: int, hidden: int, intermediate: int, experts: int, top_k: int, b: int) -> tuple[Op, ...]:
    """Top-k routed SwiGLU experts (grouped matmuls over ``tokens * top_k`` rows).

    Weight bytes count the experts actually hit (expected value under uniform routing: random
    weights route nearly uniformly); parameters count all ``experts``.
    """
    rows = tokens * top_k
    per_expert = 3 * hidden * intermediate
    touched = experts_touched(rows, experts, top_k)
    gate_up_w = round(touched * 2 * hidden * intermediate) * b
    down_w = round(touched * hidden * intermediate) * b
    gate_up = Cost(
        tensor_flops=2 * rows * hidden * 2 * intermediate,
        weight_read_bytes=gate_up_w,
        read_bytes=rows * hidden * b,
        write_bytes=rows * 2 * intermediate * b,
        params=experts * 2 * hidden * intermediate,
        act_bytes=rows * (hidden + 2 * intermediate) * b,
    )
    down = Cost(
        tensor_flops=2 * rows * intermediate * hidden,
        weight_read_bytes=down_w,
        read_bytes=rows * intermediate * b,
        write_bytes=rows * hidden * b,
        params=experts * per_expert - experts * 2 * hidden * intermediate,
        act_bytes=rows * (hidden + intermediate) * b,
    )
    sig = Kernel.of("routed_experts", rows=tokens, hidden=hidden, inter=intermediate, experts=experts, top_k=top_k)
    return (
        Op("experts_gate_up", "matmul", gate_up, ((sig, 1.0),)),
        gated("experts_act", rows * intermediate, b).tagged(None),
        Op("experts_down", "matmul", down),
        Op(
            "experts_combine",
            "routing",
            Cost(
                other_flops=2 * rows * hidden,  # weight and accumulate
                read_bytes=rows * hidden * b,
                write_bytes=tokens * hidden * b,
                act_bytes=(rows + tokens) * hidden * b,
            ),
        ),
    )


def swiglu_mlp(prefix: str, tokens: int, hidden: int, intermediate: int, b: int) -> tuple[Op, ...]:
    """A dense SwiGLU MLP (gate, up, silu*mul, down), bias-free."""
    return (
        linear(f"{prefix}gate_proj", tokens, hidden, intermediate, bias=False, b=b),
        linear(f"{prefix}up_proj", tokens, hidden, intermediate, bias=False, b=b),
        gated(f"{prefix}act", tokens * intermediate, b),
        linear(f"{prefix}down_proj", tokens, intermediate, hidden, bias=False, b=b),
    )


def windows(side: int, window: int) -> tuple[int, int]:
    """(padded side, windows per map) of a ``side x side`` map split into ``window`` squares."""
    padded = math.ceil(side / window) * window
    return padded, (padded // window) ** 2
