"""The unit of the analytic model: the cost of one operation (FLOPs, bytes, parameters, memory).

Conventions (docs/analytic-model.md): 2 FLOPs per multiply-accumulate; ``tensor_flops`` are
the matmul/convolution FLOPs tensor cores run, ``other_flops`` everything elementwise or
reducing (norms, activations, softmax, adds). Bytes count every operand read and every result
written by the operation as one unfused kernel would, in the workload's dtype; weights are read
once per call. ``params`` are parameters owned (not multiplied by calls); ``act_bytes`` is the
live activation working set of the operation (inputs + outputs), whose maximum over a stage is
its peak activation memory.
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from dsocr.analytic.signature import Kernel

#: Kernel signatures an operation runs, with how many times (fractional after decode interpolation).
KernelCounts = tuple[tuple[Kernel, float], ...]

Category = Literal["convolution", "matmul", "attention", "normalization", "activation", "routing", "embedding", "other"]
#: Every operation category, in report order.
CATEGORIES: Final[tuple[Category, ...]] = (
    "convolution",
    "matmul",
    "attention",
    "normalization",
    "activation",
    "routing",
    "embedding",
    "other",
)


@attrs.frozen
class Cost:
    """FLOPs, bytes, parameters and activation memory of one or more operations."""

    tensor_flops: int = 0
    other_flops: int = 0
    weight_read_bytes: int = 0  #: parameters read
    read_bytes: int = 0  #: activations read
    write_bytes: int = 0  #: activations written
    kv_read_bytes: int = 0  #: KV cache read
    kv_write_bytes: int = 0  #: KV cache written (appended)
    params: int = 0
    act_bytes: int = 0  #: activation working set (max, not summed)

    @property
    def flops(self) -> int:
        """All FLOPs (tensor + other)."""
        return self.tensor_flops + self.other_flops

    @property
    def bytes(self) -> int:
        """All bytes moved: weights, activations and KV cache, read and written."""
        return self.weight_read_bytes + self.read_bytes + self.write_bytes + self.kv_read_bytes + self.kv_write_bytes

    def __add__(self, other: Cost) -> Cost:
        """Two costs in sequence: everything adds except the activation working set (max)."""
        return Cost(
            self.tensor_flops + other.tensor_flops,
            self.other_flops + other.other_flops,
            self.weight_read_bytes + other.weight_read_bytes,
            self.read_bytes + other.read_bytes,
            self.write_bytes + other.write_bytes,
            self.kv_read_bytes + other.kv_read_bytes,
            self.kv_write_bytes + other.kv_write_bytes,
            self.params + other.params,
            max(self.act_bytes, other.act_bytes),
        )

    def times(self, n: int) -> Cost:
        """The same operation run ``n`` times: work scales, parameters and working set do not."""
        return attrs.evolve(
            self,
            tensor_flops=self.tensor_flops * n,
            other_flops=self.other_flops * n,
            weight_read_bytes=self.weight_read_bytes * n,
            read_bytes=self.read_bytes * n,
            write_bytes=self.write_bytes * n,
            kv_read_bytes=self.kv_read_bytes * n,
            kv_write_bytes=self.kv_write_bytes * n,
        )

    def merged(self, other: Cost) -> Cost:
        """The same module seen in two runs (other shapes): work adds, parameters are shared."""
        total = self + other
        return attrs.evolve(total, params=max(self.params, other.params))


ZERO: Final = Cost()


@attrs.frozen
class Op:
    """One primitive operation inside a module."""

    name: str  #: e.g. ``qkv``, ``scores``, ``softmax``
    category: Category
    cost: Cost
    #: The signatures this operation runs (empty when another operation's signature covers it).
    kernels: KernelCounts = ()

    def times(self, n: int) -> Op:
        """This operation run ``n`` times."""
        return attrs.evolve(self, cost=self.cost.times(n), kernels=scale_counts(self.kernels, n))

    def tagged(self, kernel: Kernel | None) -> Op:
        """This operation running ``kernel`` once per call (``None``: covered by another operation)."""
        return attrs.evolve(self, kernels=() if kernel is None else ((kernel, 1.0),))


def scale_counts(counts: KernelCounts, n: float) -> KernelCounts:
    """Every count multiplied by ``n``."""
    return tuple((k, c * n) for k, c in counts)


def add_counts(*parts: KernelCounts) -> KernelCounts:
    """Counts of several operations together (same signatures add up; first-seen order)."""
    total: dict[str, tuple[Kernel, float]] = {}
    for part in parts:
        for k, c in part:
            prev = total.get(k.key)
            total[k.key] = (k, c if prev is None else prev[1] + c)
    return tuple(v for v in total.values() if v[1] != 0)
