"""The module hierarchy of an estimate as flat rows, merged over stages (one row per module path)."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from dsocr.analytic.cost import Category, Cost, Op
from dsocr.analytic.tree import Module
from dsocr.analytic.workload import ModelEstimate


@attrs.frozen
class ModuleRow:
    """One module path over all stages it runs in."""

    path: str
    kind: str
    parent: str | None  #: enclosing module path; None for the top-level paths
    depth: int
    calls: int
    cost: Cost  #: this module including its children, all stages
    categories: dict[Category, int]  #: FLOPs per operation category
    stages: dict[str, Cost]  #: cost per stage it runs in
    ops: tuple[Op, ...]  #: its own operations, all stages merged by name
    all_ops: tuple[Op, ...] = ()  #: every operation of it and its descendants, per stage (not merged)


def _walk(m: Module, parent: str | None, depth: int) -> Iterator[tuple[Module, str | None, int]]:
    yield m, parent, depth
    for c in m.children:
        yield from _walk(c, m.path, depth + 1)


def module_rows(estimate: ModelEstimate) -> list[ModuleRow]:
    """Every module path once (depth-first, first-seen order) with calls and costs summed over stages."""
    rows: dict[str, ModuleRow] = {}
    for stage in estimate.stages:
        for top in stage.modules:
            for m, parent, depth in _walk(top, None, 0):
                total = m.total()
                prev = rows.get(m.path)
                if prev is None:
                    rows[m.path] = ModuleRow(
                        m.path,
                        m.kind,
                        parent,
                        depth,
                        m.calls,
                        total,
                        m.categories(),
                        {stage.name: total},
                        m.ops,
                        tuple(m.all_ops()),
                    )
                    continue
                cats = dict(prev.categories)
                for cat, flops in m.categories().items():
                    cats[cat] = cats.get(cat, 0) + flops
                merged_ops: dict[str, Op] = {o.name: o for o in prev.ops}
                for o in m.ops:
                    old = merged_ops.get(o.name)
                    merged_ops[o.name] = o if old is None else attrs.evolve(old, cost=old.cost.merged(o.cost))
                stages = dict(prev.stages)
                stages[stage.name] = stages[stage.name].merged(total) if stage.name in stages else total
                rows[m.path] = attrs.evolve(
                    prev,
                    calls=prev.calls + m.calls,
                    cost=prev.cost.merged(total),
                    categories=cats,
                    stages=stages,
                    ops=tuple(merged_ops.values()),
                    all_ops=(*prev.all_ops, *m.all_ops()),
                )
    return list(rows.values())
