"""Kernel categories: a declarative table of name patterns, first match wins.

The patterns are case-insensitive regular expressions searched anywhere in the demangled
kernel name. Order matters: specific families (attention, MoE routing, GEMM) come before
the generic ones (copy, elementwise), because the template arguments of a GEMM kernel can
mention ``Copy_Atom`` and an elementwise kernel can wrap a copy functor.
"""

from __future__ import annotations

import re
from typing import Final

import polars as pl

GEMM: Final = "gemm"
ATTENTION: Final = "attention"
MOE_ROUTING: Final = "moe_routing"
NORMALIZATION: Final = "normalization"
ELEMENTWISE: Final = "elementwise"
REDUCTION: Final = "reduction"
COPY: Final = "copy"
COMMUNICATION: Final = "communication"
OTHER: Final = "other"
#: A whole CUDA graph execution (``--cuda-graph-trace graph``): its kernels are not itemized.
CUDA_GRAPH: Final = "cuda_graph"

#: Every category, in the order reports list them.
CATEGORIES: Final[tuple[str, ...]] = (
    GEMM,
    ATTENTION,
    MOE_ROUTING,
    NORMALIZATION,
    ELEMENTWISE,
    REDUCTION,
    COPY,
    COMMUNICATION,
    OTHER,
    CUDA_GRAPH,
)

#: Human labels for reports.
LABELS: Final[dict[str, str]] = {
    GEMM: "GEMM",
    ATTENTION: "attention",
    MOE_ROUTING: "MoE routing/sort/scan/index",
    NORMALIZATION: "normalization",
    ELEMENTWISE: "elementwise",
    REDUCTION: "reduction",
    COPY: "copy",
    COMMUNICATION: "communication",
    OTHER: "other",
    CUDA_GRAPH: "CUDA graph (kernels not itemized)",
}

#: (category, pattern): the first pattern that matches a kernel name decides its category.
RULES: Final[tuple[tuple[str, str], ...]] = (
    (CUDA_GRAPH, r"^CUDA graph \d+$"),
    (COMMUNICATION, r"nccl|all_?reduce|all_?gather|reduce_?scatter|alltoall|sendrecv"),
    (ATTENTION, r"flash|fmha|sdpa|attention|attn|paged_?kv|mha_|xformers"),
    (
        MOE_ROUTING,
        r"topk|sort|radix|\bscan|devicescan|histogram|prepare_grouped_gemm|moe_|router|routing"
        r"|index_put|index_kernel|indexselect|index_select|gather|scatter|fill_reverse_indices|permute_tokens",
    ),
    (GEMM, r"gemm|gemv|cutlass|cublas|xmma|nvjet|wgmma|matmul|_mm_|dot_kernel|splitkreduce|cudnn.*conv|implicit_gemm"),
    (NORMALIZATION, r"layer_?norm|rms_?norm|group_?norm|batch_?norm|instance_?norm|\bln_"),
    (REDUCTION, r"reduce|softmax|argmax|argmin|cumsum|norm_kernel|lean_reduction"),
    (COPY, r"copy|catarray|\bcat_|concat|memcpy|transpose|contiguous|im2col"),
    (ELEMENTWISE, r"elementwise|functor|unary|binary|fill|arange|distribution|activation|gelu|silu|relu|where"),
)

_COMPILED: Final = tuple((cat, re.compile(pat, re.IGNORECASE)) for cat, pat in RULES)


def categorize(name: str) -> str:
    """Return the category of one kernel name (:data:`OTHER` when no rule matches)."""
    for cat, pattern in _COMPILED:
        if pattern.search(name):
            return cat
    return OTHER


def category_expr(name: pl.Expr) -> pl.Expr:
    """A polars expression giving the category of every kernel name in ``name``.

    Apply it to the unique names (a few hundred) and join back, not to every kernel row.
    """
    expr: pl.Expr = pl.lit(OTHER)
    for cat, pat in reversed(RULES):
        expr = pl.when(name.str.contains(f"(?i){pat}")).then(pl.lit(cat)).otherwise(expr)
    return expr
