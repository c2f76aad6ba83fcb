"""Routed experts against the real H100 capture: the ``aten::_grouped_mm`` shapes it recorded.

``torch.utils.flop_counter`` counts ``_grouped_mm`` as 0, so the routed experts are checked
against a hand-derived count and against the operator shapes of the fixture's emit_nvtx run
(decoder only, 900-token prompt, prefill + 8 decode steps, 11 MoE layers).
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path

from dsocr.analytic import layers
from dsocr.model.architecture import DEEPSEEK_OCR

SHAPES = re.compile(r"sizes = \[\[(\d+), (\d+)\], \[(\d+), (\d+), (\d+)\]")
CFG = DEEPSEEK_OCR.decoder


def _grouped_mm_shapes(path: Path) -> Counter[tuple[int, int, int, int]]:
    con = sqlite3.connect(str(path))
    try:
        texts = [t for (t,) in con.execute("SELECT text FROM NVTX_EVENTS WHERE text LIKE 'aten::_grouped_mm%'")]
    finally:
        con.close()
    shapes: Counter[tuple[int, int, int, int]] = Counter()
    for text in texts:
        m = SHAPES.search(text)
        assert m is not None, text
        rows, k, experts, k2, n = (int(g) for g in m.groups())
        assert k == k2
        shapes[(rows, k, n, experts)] += 1
    return shapes


def _experts_flops(tokens: int, decode: bool) -> int:
    ps = layers.Pass(1, tokens, 900 + (1 if decode else 0), decode=decode)
    experts = layers.moe(1, CFG, ps, b=2).children[1]
    assert experts.path == "decoder.layers.1.moe.experts"
    return experts.total().tensor_flops


def test_routed_experts_hand_count() -> None:
    assert _experts_flops(900, False) == 2 * 900 * 6 * 3 * 1280 * 896
    assert _experts_flops(1, True) == 2 * 6 * 3 * 1280 * 896


def test_grouped_mm_shapes_match_the_analytic_experts(h100_sqlite: Path) -> None:
    shapes = _grouped_mm_shapes(h100_sqlite)
    moe_layers = CFG.layers - CFG.dense_layers
    rows_prefill = 900 * CFG.experts_per_token
    rows_decode = CFG.experts_per_token
    gate_up = (CFG.hidden, 2 * CFG.moe_intermediate, CFG.routed_experts)
    down = (CFG.moe_intermediate, CFG.hidden, CFG.routed_experts)
    assert shapes == {
        (rows_prefill, *gate_up): moe_layers,
        (rows_prefill, *down): moe_layers,
        (rows_decode, *gate_up): 8 * moe_layers,
        (rows_decode, *down): 8 * moe_layers,
    }

    def flops(rows: int) -> int:
        return sum(2 * m * k * n for (m, k, n, _e) in shapes if m == rows)

    assert flops(rows_prefill) == _experts_flops(900, False)
    assert flops(rows_decode) == _experts_flops(1, True)


def test_lm_head_runs_on_the_last_position_only(h100_sqlite: Path) -> None:
    """Prefill computes logits for one position (the model's default ``prefill_logits="last"``)."""
    con = sqlite3.connect(str(h100_sqlite))
    try:
        texts = [
            t for (t,) in con.execute("SELECT text FROM NVTX_EVENTS WHERE text LIKE 'aten::linear%[129280, 1280]%'")
        ]
    finally:
        con.close()
    assert len(texts) == 1 + 8  # prefill + 8 decode steps
    assert all("sizes = [[1, 1280], [129280, 1280]" in t for t in texts)
    from dsocr.analytic.workload import Workload

    assert Workload().prefill_logits == "last"
