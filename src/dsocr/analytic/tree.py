"""The module hierarchy: named modules (contract paths) holding primitive operations and children."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from dsocr.analytic.cost import CATEGORIES, ZERO, Category, Cost, KernelCounts, Op, add_counts, scale_counts


def _merge_ops(a: Iterable[Op], b: Iterable[Op]) -> tuple[Op, ...]:
    merged: dict[str, Op] = {}
    for op in (*a, *b):
        prev = merged.get(op.name)
        merged[op.name] = (
            op
            if prev is None
            else attrs.evolve(prev, cost=prev.cost.merged(op.cost), kernels=add_counts(prev.kernels, op.kernels))
        )
    return tuple(merged.values())


@attrs.frozen
class Module:
    """A module of the analytic model: its path, analytic kind, call count, own ops and children."""

    path: str  #: contract module path (``vision.sam.blocks.3``); also the NVTX range name
    kind: str  #: analytic layer kind (``sam_block_global``, ``moe``, ...)
    calls: int = 1
    ops: tuple[Op, ...] = ()
    children: tuple[Module, ...] = ()

    def own(self) -> Cost:
        """Cost of this module's own operations (children excluded)."""
        total = ZERO
        for op in self.ops:
            total = total + op.cost
        return total

    def total(self) -> Cost:
        """Cost of this module including its children."""
        total = self.own()
        for child in self.children:
            total = total + child.total()
        return total

    def walk(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def all_ops(self) -> Iterator[Op]:
        """Every operation in this module and its descendants."""
        for m in self.walk():
            yield from m.ops

    def categories(self) -> dict[Category, int]:
        """FLOPs per operation category (children included); categories without FLOPs or bytes omitted."""
        flops: dict[Category, int] = {}
        seen: set[Category] = set()
        for op in self.all_ops():
            flops[op.category] = flops.get(op.category, 0) + op.cost.flops
            if op.cost.flops or op.cost.bytes:
                seen.add(op.category)
        return {c: flops[c] for c in CATEGORIES if c in seen}

    def times(self, n: int) -> Module:
        """This module run ``n`` times (calls and work scale; parameters do not)."""
        return attrs.evolve(
            self,
            calls=self.calls * n,
            ops=tuple(op.times(n) for op in self.ops),
            children=tuple(c.times(n) for c in self.children),
        )

    def merged(self, other: Module) -> Module:
        """The same module seen in another run: calls and work add, parameters are shared."""
        if other.path != self.path:
            raise ValueError(f"cannot merge module {other.path} into {self.path}")
        return attrs.evolve(
            self,
            calls=self.calls + other.calls,
            ops=_merge_ops(self.ops, other.ops),
            children=merge_modules((*self.children, *other.children)),
        )


def merge_modules(modules: Iterable[Module]) -> tuple[Module, ...]:
    """Merge modules with the same path (first-seen order)."""
    merged: dict[str, Module] = {}
    for m in modules:
        prev = merged.get(m.path)
        merged[m.path] = m if prev is None else prev.merged(m)
    return tuple(merged.values())


def total_of(modules: Iterable[Module]) -> Cost:
    """Summed cost of several modules."""
    total = ZERO
    for m in modules:
        total = total + m.total()
    return total


def _affine_cost(c0: Cost, c1: Cost, cmax: Cost, n: int, extra: int) -> Cost:
    def f(name: str) -> int:
        a, b = getattr(c0, name), getattr(c1, name)
        return int(n * a + extra * (b - a))

    return Cost(
        tensor_flops=f("tensor_flops"),
        other_flops=f("other_flops"),
        weight_read_bytes=f("weight_read_bytes"),
        read_bytes=f("read_bytes"),
        write_bytes=f("write_bytes"),
        kv_read_bytes=f("kv_read_bytes"),
        kv_write_bytes=f("kv_write_bytes"),
        params=c0.params,
        act_bytes=cmax.act_bytes,
    )


def _affine_kernels(k0: KernelCounts, kmax: KernelCounts, n: int, extra: int, span: int) -> KernelCounts:
    """Signatures of ``n`` runs: those that do not depend on ``x`` ``n`` times; the others interpolated.

    A kernel's time is taken as linear in ``x`` between its signatures at ``x0`` and ``x_max``:
    ``sum_i t(x_i) = (n - w) t(x0) + w t(x_max)`` with ``w = extra / (x_max - x0)``.
    """
    if k0 == kmax or span == 0:
        return scale_counts(k0, n)
    w = extra / span
    return add_counts(scale_counts(k0, n - w), scale_counts(kmax, w))


def affine_sum(at0: Module, at1: Module, at_max: Module, n: int, extra: int, span: int = 0) -> Module:
    """Sum of ``n`` runs of a module whose cost is affine in one size ``x`` (the decode context).

    ``at0``/``at1`` are the module at ``x0`` and ``x0 + 1``, ``at_max`` at the largest ``x``;
    ``extra = sum(x) - n * x0``. Exact for affine costs: ``n * f(x0) + extra * (f(x0 + 1) - f(x0))``.
    ``span = x_max - x0`` interpolates the kernel signatures (see :func:`_affine_kernels`).
    """
    if not (at0.path == at1.path == at_max.path and len(at0.ops) == len(at1.ops) == len(at_max.ops)):
        raise ValueError(f"module {at0.path}: structure differs between sizes")
    return attrs.evolve(
        at0,
        calls=at0.calls * n,
        ops=tuple(
            attrs.evolve(
                o0,
                cost=_affine_cost(o0.cost, o1.cost, om.cost, n, extra),
                kernels=_affine_kernels(o0.kernels, om.kernels, n, extra, span),
            )
            for o0, o1, om in zip(at0.ops, at1.ops, at_max.ops, strict=True)
        ),
        children=tuple(
            affine_sum(c0, c1, cm, n, extra, span)
            for c0, c1, cm in zip(at0.children, at1.children, at_max.children, strict=True)
        ),
    )
