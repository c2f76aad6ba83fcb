"""Primitive operations: exact counts for small shapes worked out by hand."""

from __future__ import annotations

import pytest

from dsocr.analytic import primitives as p
from dsocr.analytic.cost import Cost


def test_linear_counts() -> None:
    op = p.linear("fc", tokens=3, in_features=4, out_features=5, bias=True, b=2)
    c = op.cost
    assert op.category == "matmul"
    assert c.tensor_flops == 2 * 3 * 4 * 5 == 120
    assert c.other_flops == 3 * 5  # bias add
    assert c.params == 4 * 5 + 5
    assert (c.weight_read_bytes, c.read_bytes, c.write_bytes) == (25 * 2, 12 * 2, 15 * 2)
    assert c.bytes == 50 + 24 + 30
    no_bias = p.linear("fc", 3, 4, 5, bias=False, b=4).cost
    assert (no_bias.other_flops, no_bias.params, no_bias.weight_read_bytes) == (0, 20, 80)


def test_conv2d_counts() -> None:
    same = p.conv2d("c", batch=1, in_channels=2, out_channels=3, size=4, kernel=3, padding=1, bias=False, b=2).cost
    assert same.tensor_flops == 2 * (3 * 4 * 4) * 2 * 9 == 1728
    assert same.params == 3 * 2 * 9
    assert same.write_bytes == 3 * 16 * 2
    strided = p.conv2d("c", 2, 2, 3, 4, kernel=3, stride=2, padding=1, bias=True, b=2).cost
    assert p.conv_out(4, 3, 2, 1) == 2
    assert strided.tensor_flops == 2 * (2 * 3 * 2 * 2) * 2 * 9
    assert strided.other_flops == 2 * 3 * 2 * 2
    assert strided.params == 3 * 2 * 9 + 3
    patch = p.conv2d("patch", 1, 3, 768, 1024, kernel=16, stride=16, bias=True, b=2).cost
    assert patch.tensor_flops == 2 * 768 * 64 * 64 * 3 * 16 * 16


def test_norms_and_activations() -> None:
    ln = p.layer_norm("ln", tokens=10, dim=8, b=2).cost
    assert (ln.tensor_flops, ln.other_flops, ln.params) == (0, 7 * 80, 16)
    rms = p.rms_norm("rms", tokens=10, dim=8, b=2).cost
    assert (rms.other_flops, rms.params) == (4 * 80, 8)
    assert p.activation("a", "gelu", 100, 2).cost.other_flops == 800
    assert p.activation("a", "silu", 100, 2).cost.other_flops == 400
    sw = p.gated("g", 100, 2).cost
    assert sw.other_flops == 500 and sw.read_bytes == 2 * 100 * 2


@pytest.mark.parametrize(("q", "kv", "pairs"), [(4, 4, 10), (1, 10, 10), (2, 5, 9), (3, 3, 6)])
def test_causal_pairs(q: int, kv: int, pairs: int) -> None:
    assert p.causal_pairs(q, kv) == pairs


def test_attention_sdpa_vs_eager() -> None:
    (fused,) = p.attention(1, 2, 4, 4, 8, b=2, impl="sdpa", causal=True)
    assert fused.cost.tensor_flops == 4 * 2 * 10 * 8  # 10 causal pairs per head
    # Q, K, V read once, O written once.
    assert fused.cost.read_bytes == 3 * 2 * 4 * 8 * 2
    assert fused.cost.write_bytes == 2 * 4 * 8 * 2
    eager = p.attention(1, 2, 4, 4, 8, b=2, impl="eager", causal=True)
    assert [o.name for o in eager] == ["scores", "softmax", "context"]
    assert sum(o.cost.tensor_flops for o in eager) == 4 * 2 * 16 * 8  # eager computes masked pairs too
    assert eager[0].cost.write_bytes == 2 * 16 * 2  # the score matrix is materialized


def test_attention_decode_reads_kv_cache() -> None:
    (op,) = p.attention(1, 10, 1, 900, 128, b=2, impl="sdpa", causal=True, kv_heads=10, kv_from_cache=True)
    assert op.cost.kv_read_bytes == 2 * 10 * 900 * 128 * 2
    assert op.cost.read_bytes == 10 * 128 * 2
    assert op.cost.tensor_flops == 4 * 10 * 900 * 128
    append = p.kv_append(1, 10, 1, 128, 2).cost
    assert append.kv_write_bytes == 2 * 10 * 128 * 2


def test_rel_pos_terms() -> None:
    c = p.rel_pos(batch=1, heads=1, q_side=2, k_side=2, head_dim=4, b=2, table=3).cost
    assert c.tensor_flops == 2 * 2 * 4 * 2 * 4  # two einsums, 4 queries x 2 keys per axis x 4 channels
    assert c.other_flops == 2 * 16
    assert c.params == 2 * 3 * 4


def test_router_and_routed_experts() -> None:
    logits, soft, topk = p.router(tokens=2, hidden=4, experts=8, top_k=2, b=2)
    assert logits.cost.tensor_flops == 2 * 2 * 4 * 8 and logits.cost.params == 32
    assert {logits.category, soft.category, topk.category} == {"routing"}
    ops = p.routed_experts(tokens=1, hidden=4, intermediate=3, experts=8, top_k=2, b=2)
    total = sum((o.cost for o in ops), Cost())
    assert total.tensor_flops == 2 * (1 * 2) * 3 * 4 * 3  # rows x (gate, up, down) x hidden x intermediate
    assert total.params == 8 * 3 * 4 * 3
    assert total.weight_read_bytes == 2 * 3 * 4 * 3 * 2  # one token touches exactly its 2 experts


def test_experts_touched() -> None:
    assert p.experts_touched(6, 64, 6) == 6
    assert p.experts_touched(6 * 900, 64, 6) == pytest.approx(64, abs=1e-6)
    assert 6 < p.experts_touched(6 * 4, 64, 6) < 24


def test_embedding_reads_rows_only() -> None:
    c = p.embedding_lookup("e", tokens=12, vocab=129_280, dim=1280, b=2).cost
    assert c.params == 129_280 * 1280
    assert c.weight_read_bytes == 12 * 1280 * 2
    assert c.flops == 0


def test_windows() -> None:
    assert p.windows(64, 14) == (70, 25)
    assert p.windows(40, 14) == (42, 9)
    assert p.windows(28, 14) == (28, 4)


def test_cost_add_and_times() -> None:
    a = Cost(tensor_flops=10, weight_read_bytes=4, params=2, act_bytes=100)
    b = Cost(tensor_flops=5, read_bytes=3, params=1, act_bytes=50)
    s = a + b
    assert (s.tensor_flops, s.bytes, s.params, s.act_bytes) == (15, 7, 3, 100)
    t = a.times(3)
    assert (t.tensor_flops, t.weight_read_bytes, t.params, t.act_bytes) == (30, 12, 2, 100)
    assert a.merged(a).params == 2
