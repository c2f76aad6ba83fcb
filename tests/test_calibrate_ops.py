"""The calibration builders run the same aten operators as the replica's modules (CPU, tiny replica).

Each test runs one replica module under a dispatch-mode recorder and the builders of the kernel
signatures that module is made of, and compares the two multisets of operators: name, and per
tensor argument its element count, contiguity (row-major and channels-last) and dtype. View
operators (view, permute, ...) are left out: they launch nothing; ``reshape`` is kept (it copies
a tensor it cannot view). Equal multisets mean the
calibration times the replica's own kernels, in the replica's memory layouts, at the replica's
sizes (the signatures written here are the analytic model's for that module).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from dsocr.analytic.signature import Kernel  # noqa: E402
from dsocr.capture import calibrate_ops  # noqa: E402
from dsocr.capture.calibrate import SMOKE_ARCH  # noqa: E402
from dsocr.execution.replica import Replica, build_replica  # noqa: E402

K = Kernel.of
#: Operators that only make views (no kernel).
VIEWS = frozenset(
    {
        "view",
        "view_as",
        "_unsafe_view",
        "transpose",
        "permute",
        "unsqueeze",
        "squeeze",
        "expand",
        "slice",
        "select",
        "unbind",
        "t",
        "as_strided",
        "alias",
        "detach",
        "split",
        "chunk",
        "split_with_sizes",
        "lift_fresh",
    }
)
Op = tuple[str, tuple[tuple[int, bool, bool, str], ...]]


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if name == "reshape_as":  # reshape(x, other.shape): a copy when x is not viewable
                name, tensors = "reshape", tensors[:1]
            tensors += [t for a in args if isinstance(a, list | tuple) for t in a if isinstance(t, torch.Tensor)]
            self.ops.append(
                (
                    name,
                    tuple(
                        (
                            t.numel(),
                            t.is_contiguous(),
                            t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last),
                            str(t.dtype),
                        )
                        for t in tensors
                    ),
                )
            )
        return func(*args, **(kwargs or {}))


def recorded(fn: Callable[[], Any]) -> Counter[Op]:
    with torch.inference_mode(), _Recorder() as rec:
        fn()
    return Counter(rec.ops)


def builders(kernels: Iterable[Kernel], moe: str = "grouped") -> Counter[Op]:
    total: Counter[Op] = Counter()
    for k in kernels:
        torch.manual_seed(0)
        with torch.inference_mode():
            run = calibrate_ops.build(k, torch.device("cpu"), torch.float32, moe)
        total += recorded(run)
    return total


def assert_same_ops(replica_ops: Counter[Op], builder_ops: Counter[Op]) -> None:
    assert replica_ops, "the replica ran no operators"
    only_replica = replica_ops - builder_ops
    only_builders = builder_ops - replica_ops
    assert (dict(only_replica), dict(only_builders)) == ({}, {})


@pytest.fixture(scope="module")
def replica() -> Replica:
    """The grouped-MoE/SDPA execution: its operators do not depend on the routing (the loop's do)."""
    return build_replica(SMOKE_ARCH, device="cpu", attn_implementation="sdpa", moe="grouped")


S, C, D = SMOKE_ARCH.sam, SMOKE_ARCH.clip, SMOKE_ARCH.decoder


def _sam_block_kernels(batch: int, side: int, *, window: bool, impl: str = "sdpa") -> list[Kernel]:
    d, heads, w = S.hidden, S.heads, S.window
    rows = batch * side * side
    if window:
        padded = -(-side // w) * w
        seqs, seq_side, attn_rows, table = batch * (padded // w) ** 2, w, batch * padded * padded, 2 * w - 1
    else:
        seqs, seq_side, attn_rows, table = batch, side, rows, 2 * S.pos_grid - 1
    win = {"batch": batch, "side": side, "dim": d, "window": w}
    attention: list[Kernel] = [
        K("linear", rows=attn_rows, **{"in": d}, out=3 * d, bias=1),
        K("rel_pos", batch=seqs, heads=heads, side=seq_side, head_dim=d // heads, table=table),
        K(
            "attention",
            batch=seqs,
            heads=heads,
            kv_heads=heads,
            q=seq_side**2,
            kv=seq_side**2,
            head_dim=d // heads,
            causal=0,
            impl=impl,
            mask=1,
        ),
        K("linear", rows=attn_rows, **{"in": d}, out=d, bias=1),
    ]
    if window:
        attention = [
            K("copy", elements=attn_rows * d, pattern="window_partition", **win),
            *attention,
            K("copy", elements=rows * d, pattern="window_unpartition", **win),
        ]
    return [
        K("layer_norm", rows=rows, dim=d, layout="last"),
        *attention,
        K("elementwise", elements=rows * d, inputs=2),
        K("layer_norm", rows=rows, dim=d, layout="last"),
        K("linear", rows=rows, **{"in": d}, out=S.mlp, bias=1),
        K("activation", fn="gelu", elements=rows * S.mlp),
        K("linear", rows=rows, **{"in": S.mlp}, out=d, bias=1),
        K("elementwise", elements=rows * d, inputs=2),
    ]


@pytest.mark.parametrize(("batch", "side"), [(2, 20), (1, 14)])
def test_sam_windowed_block(replica: Replica, batch: int, side: int) -> None:
    x = torch.randn(batch, side, side, S.hidden)
    block = replica.sam.blocks[0]
    assert block.window_size == S.window
    assert_same_ops(recorded(lambda: block(x)), builders(_sam_block_kernels(batch, side, window=True)))


@pytest.mark.parametrize(("batch", "side"), [(1, 16), (2, 10)])
def test_sam_global_block(replica: Replica, batch: int, side: int) -> None:
    x = torch.randn(batch, side, side, S.hidden)
    block = replica.sam.blocks[1]
    assert block.window_size == 0
    assert_same_ops(recorded(lambda: block(x)), builders(_sam_block_kernels(batch, side, window=False)))


def test_sam_runs_sdpa_in_every_execution() -> None:
    """The vendor's SAM has only an SDPA path: ``attn_implementation`` is the decoder's alone."""
    eager = build_replica(SMOKE_ARCH, device="cpu", attn_implementation="eager")
    x = torch.randn(1, 16, 16, S.hidden)
    assert_same_ops(recorded(lambda: eager.sam.blocks[1](x)), builders(_sam_block_kernels(1, 16, window=False)))


def test_patch_embed(replica: Replica) -> None:
    size = 16 * S.patch_size
    pixels = torch.randn(2, 3, size, size)
    kernel = K("conv2d", batch=2, cin=3, cout=S.hidden, size=size, kernel=16, stride=16, padding=0, bias=1)
    assert_same_ops(recorded(lambda: replica.sam.patch_embed(pixels)), builders([kernel]))


def test_neck_and_compressor_layouts(replica: Replica) -> None:
    """The neck gets the last block's NHWC output: its convolutions and LayerNorm2d run channels-last."""
    batch, side, c = 1, 16, S.neck_channels
    blocks_out = torch.randn(batch, side, side, S.hidden)
    c1, c2 = S.compressor_channels
    kernels = [
        K("conv2d", batch=batch, cin=S.hidden, cout=c, size=side, kernel=1, stride=1, padding=0, bias=0),
        K("layer_norm", rows=batch * side * side, dim=c, layout="2d"),
        K("conv2d", batch=batch, cin=c, cout=c, size=side, kernel=3, stride=1, padding=1, bias=0),
        K("layer_norm", rows=batch * side * side, dim=c, layout="2d"),
        K("conv2d", batch=batch, cin=c, cout=c1, size=side, kernel=3, stride=2, padding=1, bias=0),
        K("conv2d", batch=batch, cin=c1, cout=c2, size=side // 2, kernel=3, stride=2, padding=1, bias=0),
    ]
    sam = replica.sam
    ops = recorded(lambda: sam.compressor(sam.neck(blocks_out.permute(0, 3, 1, 2))))
    expected = builders(kernels)
    # the vendor's ``net_3(x2.clone())``: one copy of net_2's output that no signature lists
    extra = ops - expected
    assert [name for name, _ in extra] == ["clone"] and sum(extra.values()) == 1
    assert expected - ops == Counter()


def test_clip_layer(replica: Replica) -> None:
    batch, tokens, d = 2, 17, C.hidden
    x = torch.randn(batch, tokens, d)
    layer = replica.clip.transformer.layers[0]
    rows = batch * tokens
    kernels = [
        K("layer_norm", rows=rows, dim=d, layout="last"),
        K("linear", rows=rows, **{"in": d}, out=3 * d, bias=1),  # the vendor's fused qkv_proj
        K(
            "attention",
            batch=batch,
            heads=C.heads,
            kv_heads=C.heads,
            q=tokens,
            kv=tokens,
            head_dim=d // C.heads,
            causal=0,
            impl="sdpa",
            mask=0,
        ),
        K("linear", rows=rows, **{"in": d}, out=d, bias=1),
        K("elementwise", elements=rows * d, inputs=2),
        K("layer_norm", rows=rows, dim=d, layout="last"),
        K("linear", rows=rows, **{"in": d}, out=C.mlp, bias=1),
        K("activation", fn="quick_gelu", elements=rows * C.mlp),
        K("linear", rows=rows, **{"in": C.mlp}, out=d, bias=1),
        K("elementwise", elements=rows * d, inputs=2),
    ]
    assert_same_ops(recorded(lambda: layer(x)), builders(kernels))


def _decoder_kernels(layer: int, new: int, past: int, impl: str = "sdpa") -> list[Kernel]:
    h, hd = D.hidden, D.head_dim
    attn = [
        K("rms_norm", rows=new, dim=h),
        *[K("linear", rows=new, **{"in": h}, out=D.heads * hd, bias=0)] * 3,
        K("rope", rows=new, heads=D.heads, kv_heads=D.kv_heads, head_dim=hd),
        K("kv_append", batch=1, kv_heads=D.kv_heads, new=new, past=past, head_dim=hd),
        K(
            "attention",
            batch=1,
            heads=D.heads,
            kv_heads=D.kv_heads,
            q=new,
            kv=past + new,
            head_dim=hd,
            causal=1,
            impl=impl,
            mask=0,
        ),
        K("linear", rows=new, **{"in": D.heads * hd}, out=h, bias=0),
        K("elementwise", elements=new * h, inputs=2),
        K("rms_norm", rows=new, dim=h),
    ]
    if not D.is_moe(layer):
        inter = D.dense_intermediate
        mlp = [
            *[K("linear", rows=new, **{"in": h}, out=inter, bias=0)] * 2,
            K("gated", elements=new * inter),
            K("linear", rows=new, **{"in": inter}, out=h, bias=0),
        ]
    else:
        shared = D.shared_intermediate
        mlp = [
            K("router", rows=new, hidden=h, experts=D.routed_experts, top_k=D.experts_per_token),
            K(
                "routed_experts",
                rows=new,
                hidden=h,
                inter=D.moe_intermediate,
                experts=D.routed_experts,
                top_k=D.experts_per_token,
            ),
            *[K("linear", rows=new, **{"in": h}, out=shared, bias=0)] * 2,
            K("gated", elements=new * shared),
            K("linear", rows=new, **{"in": shared}, out=h, bias=0),
            K("elementwise", elements=new * h, inputs=2),  # routed + shared
        ]
    return [*attn, *mlp, K("elementwise", elements=new * h, inputs=2)]


def _run_decoder_layer(replica: Replica, layer: int, new: int, past: int) -> Counter[Op]:
    """One decoder layer as the decoder runs it (mask and cache made outside the recorder)."""
    from dsocr.execution.replica_decoder import KVCache, causal_mask

    decoder = replica.decoder
    cache = KVCache()
    with torch.inference_mode():
        for i in range(len(decoder.layers)):
            if past:
                k = torch.randn(1, D.kv_heads, past, D.head_dim)
                cache.update(i, k, k.clone())
        positions = torch.arange(past, past + new).unsqueeze(0)
        hidden = torch.randn(1, new, D.hidden)
        mask = None if decoder.attn == "sdpa" else causal_mask(1, new, past, hidden.dtype, hidden.device)
    block = decoder.layers[layer]
    return recorded(lambda: block(hidden, mask, positions, cache))


@pytest.mark.parametrize(("layer", "new", "past"), [(0, 9, 0), (1, 9, 0), (0, 1, 9), (1, 1, 12)])
def test_decoder_layers_prefill_and_decode(replica: Replica, layer: int, new: int, past: int) -> None:
    assert_same_ops(_run_decoder_layer(replica, layer, new, past), builders(_decoder_kernels(layer, new, past)))


@pytest.mark.parametrize(("layer", "new", "past"), [(0, 9, 0), (1, 1, 12)])
def test_eager_decoder_layers_with_the_causal_mask(layer: int, new: int, past: int) -> None:
    eager = build_replica(SMOKE_ARCH, device="cpu", attn_implementation="eager", moe="grouped")
    assert_same_ops(
        _run_decoder_layer(eager, layer, new, past), builders(_decoder_kernels(layer, new, past, impl="eager"))
    )


def test_embedding_and_lm_head(replica: Replica) -> None:
    ids = torch.randint(0, D.vocab, (1, 7))
    hidden = torch.randn(1, 1, D.hidden)
    kernels = [
        K("embedding", rows=7, vocab=D.vocab, dim=D.hidden),
        K("linear", rows=1, **{"in": D.hidden}, out=D.vocab, bias=0),
    ]
    ops = recorded(lambda: (replica.decoder.embed_tokens(ids), replica.lm_head(hidden)))
    assert_same_ops(ops, builders(kernels))


def test_routed_experts_loop_runs_the_replicas_moe_infer() -> None:
    """The loop's operators follow the routing; the builder runs the replica's own loop (the same operators)."""
    loop = build_replica(SMOKE_ARCH, device="cpu", moe="loop")
    experts = loop.decoder.layers[1].mlp.experts
    rows = 9
    x = torch.randn(rows, D.hidden)
    weights, ids = torch.topk(torch.randn(rows, D.routed_experts).softmax(-1), D.experts_per_token, sorted=False)
    replica_names = {name for name, _ in recorded(lambda: experts(x, ids, weights))}
    kernel = K(
        "routed_experts",
        rows=rows,
        hidden=D.hidden,
        inter=D.moe_intermediate,
        experts=D.routed_experts,
        top_k=D.experts_per_token,
    )
    builder_names = {name for name, _ in builders([kernel], moe="loop")}
    assert replica_names == builder_names
    assert {"scatter_", "argsort", "linear", "index_put_"} <= replica_names  # moe_infer's dispatch and combine
