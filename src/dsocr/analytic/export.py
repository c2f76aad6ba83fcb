"""``dsocr model`` output: the estimate as JSON (schema in docs/analytic-model.md) or Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from dsocr.analytic.cost import CATEGORIES, Cost
from dsocr.analytic.peaks import Peak
from dsocr.analytic.roofline import arithmetic_intensity, ops_roofline_ns, roofline
from dsocr.analytic.workload import VISION_PARTS, ModelEstimate

if TYPE_CHECKING:
    from dsocr.analytic.hierarchy import ModuleRow

SCHEMA: Final = "dsocr.model/2"  #: 2: weight_read_bytes (traffic), weight_footprint_bytes (memory); total.params once


def cost_dict(cost: Cost) -> dict[str, Any]:
    """A cost as JSON: FLOPs (total, tensor, other), bytes (total and by kind), params, activation bytes."""
    return {
        "flops": cost.flops,
        "tensor_flops": cost.tensor_flops,
        "other_flops": cost.other_flops,
        "bytes": cost.bytes,
        "weight_read_bytes": cost.weight_read_bytes,
        "activation_read_bytes": cost.read_bytes,
        "activation_write_bytes": cost.write_bytes,
        "kv_read_bytes": cost.kv_read_bytes,
        "kv_write_bytes": cost.kv_write_bytes,
        "params": cost.params,
        "activation_working_set_bytes": cost.act_bytes,
        "intensity": arithmetic_intensity(cost),
    }


def _roof(cost: Cost, peak: Peak | None) -> dict[str, Any]:
    if peak is None:
        return {}
    r = roofline(cost, peak)
    return {"predicted_ns": r.predicted_ns, "bound": r.bound}


def _workload(est: ModelEstimate) -> dict[str, Any]:
    w = est.workload
    lay = w.layout
    first, last, total = est.decode_context
    steps = w.decode_steps
    return {
        "mode": w.mode,
        "crop_grid": list(w.crop_grid),
        "image_size": list(w.image_size) if w.image_size else None,
        "views": [{"kind": v.kind, "size": v.size, "count": v.count, "tokens": v.tokens} for v in est.views],
        "image_embeddings": w.image_embeddings,
        "layout": {
            "global_tokens": lay.global_tokens,
            "crop_tokens": lay.crop_tokens,
            "newline_tokens": lay.newline_tokens,
            "separator_tokens": lay.separator_tokens,
            "total": lay.total,
        },
        "prompt_tokens": w.prompt_tokens,
        "prefill_length": w.prefill_length,
        "new_tokens": w.new_tokens,
        "decode_steps": steps,
        "context_mode": str(w.context),
        "decode_context": {"first": first, "last": last, "mean": total / steps if steps else None},
        "batch": w.batch,
        "dtype": w.dtype,
        "attn_impl": w.attn_impl,
        "prefill_logits": w.prefill_logits,
    }


def _stages(est: ModelEstimate, peak: Peak | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in est.stages:
        entry = {**cost_dict(stage.cost), **_roof(stage.cost, peak)}
        if peak is not None:
            entry["predicted_ops_ns"] = ops_roofline_ns((o for m in stage.modules for o in m.all_ops()), peak)
        if stage.name == "vision":
            entry["parts"] = {
                part: {**cost_dict(est.vision_part(part)), **_roof(est.vision_part(part), peak)}
                for part in VISION_PARTS
            }
            entry["views"] = [
                {
                    "kind": v.kind,
                    "size": v.size,
                    "count": v.count,
                    "sam": cost_dict(v.sam),
                    "clip": cost_dict(v.clip),
                    "projector": cost_dict(v.projector),
                }
                for v in est.views
            ]
        if stage.name == "decode" and est.workload.decode_steps:
            n = est.workload.decode_steps
            entry["per_step"] = {"flops": stage.cost.flops / n, "bytes": stage.cost.bytes / n}
        out[stage.name] = entry
    return out


def _module(row: ModuleRow, peak: Peak | None) -> dict[str, Any]:
    c = row.cost
    entry: dict[str, Any] = {
        "path": row.path,
        "parent": row.parent,
        "depth": row.depth,
        "kind": row.kind,
        "calls": row.calls,
        "flops": c.flops,
        "tensor_flops": c.tensor_flops,
        "bytes": c.bytes,
        "params": c.params,
        "intensity": arithmetic_intensity(c),
        "categories": {k: row.categories[k] for k in CATEGORIES if k in row.categories},
        "stages": {s: {"flops": v.flops, "bytes": v.bytes} for s, v in row.stages.items()},
        "ops": [
            {"name": o.name, "category": o.category, "flops": o.cost.flops, "bytes": o.cost.bytes} for o in row.ops
        ],
    }
    if peak is not None:
        entry.update(_roof(c, peak))
        entry["predicted_ops_ns"] = ops_roofline_ns(row.all_ops, peak)
    return entry


def peak_dict(peak: Peak | None) -> dict[str, Any] | None:
    """The peak used, with its sources."""
    if peak is None:
        return None
    return {
        "gpu": peak.gpu_name,
        "entry": peak.entry,
        "tflops": peak.tflops,
        "tbps": peak.tbps,
        "tflops_source": peak.tflops_source,
        "tbps_source": peak.tbps_source,
        "source": peak.source,
        "notes": list(peak.notes),
    }


def assumptions(est: ModelEstimate) -> list[str]:
    """The modelling assumptions a reader should know, in words."""
    w = est.workload
    out = [
        "FLOPs count 2 per multiply-accumulate; bytes assume one unfused kernel per operation "
        f"(flash/SDPA attention fused), weights read once per call, {w.dtype} throughout",
        "routed experts: weights of the experts hit under uniform routing (random weights route "
        "almost uniformly; trained routing is skewed)",
        f"attention {w.attn_impl}: "
        + ("causal pairs only (flash kernels skip masked blocks)" if w.attn_impl == "sdpa" else "every pair computed"),
        f"prefill logits on {'the last position' if w.prefill_logits == 'last' else 'every position'}",
    ]
    if len(est.views) > 1:
        out.append("the crops of a page run as one batch, then the global view (two calls per vision module)")
    return out


def to_json(est: ModelEstimate, peak: Peak | None = None) -> dict[str, Any]:
    """The whole estimate as a JSON-ready dict (``schema`` ``dsocr.model/2``)."""
    from dsocr.analytic.hierarchy import module_rows

    return {
        "schema": SCHEMA,
        "model": est.arch.name,
        "workload": _workload(est),
        "stages": _stages(est, peak),
        "total": {**cost_dict(est.total), **_roof(est.total, peak)},
        "memory": {
            "params": est.params,
            "weight_footprint_bytes": est.weight_footprint_bytes,
            "kv_cache_bytes": est.kv_cache_bytes,
            "peak_activation_bytes": est.peak_activation_bytes,
        },
        "peak": peak_dict(peak),
        "assumptions": assumptions(est),
        "modules": [_module(r, peak) for r in module_rows(est)],
    }


# ----------------------------------------------------------------------------- markdown
def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _iec(value: float | None) -> str:
    """Bytes in binary units (KiB, MiB, GiB, TiB; 3 significant digits), the reports' convention for byte counts."""
    if value is None:
        return "-"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} B"


def _ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def to_markdown(
    est: ModelEstimate, peak: Peak | None = None, max_depth: int | None = None, named: str | None = None
) -> str:
    """A readable report: workload, stages, memory, views and the module hierarchy.

    ``named``: the named workload one page of which this is (its one-line description).
    """
    from dsocr.analytic.hierarchy import module_rows

    w = est.workload
    lay = w.layout
    first, last, total = est.decode_context
    lines = [
        f"# Analytic model: {est.arch.name}",
        "",
        f"- workload **{named}**: one page" if named else "- workload: custom (not a named workload)",
        f"- mode **{w.mode}**, crop grid {w.crop_grid[0]}x{w.crop_grid[1]}"
        + (f" (chosen for a {w.image_size[0]}x{w.image_size[1]} image)" if w.image_size else ""),
        f"- image embeddings {lay.total} = {lay.global_tokens} global + {lay.crop_tokens} crop tokens + "
        f"{lay.newline_tokens} newlines + {lay.separator_tokens} separator",
        f"- prefill length {w.prefill_length} (+ {w.prompt_tokens} prompt tokens), {w.new_tokens} new tokens = "
        f"prefill + {w.decode_steps} decode steps, context {w.context}"
        + (f" ({first}..{last}, mean {total / w.decode_steps:.1f})" if w.decode_steps else ""),
        f"- batch {w.batch}, {w.dtype}, attention {w.attn_impl}, prefill logits: {w.prefill_logits}",
    ]
    if peak is not None:
        lines.append(f"- peak {peak.tflops or '?'} TFLOP/s, {peak.tbps or '?'} TB/s ({peak.source})")
        lines += [f"- note: {n}" for n in peak.notes]
    lines += ["", "## Stages", ""]
    head = "| stage | FLOPs | tensor FLOPs | bytes | FLOP/byte |"
    sep = "|---|---:|---:|---:|---:|"
    if peak is not None:
        head += " roofline ms | bound |"
        sep += "---:|---|"
    lines += [head, sep]
    rows = [(s.name, s.cost) for s in est.stages]
    rows[1:1] = [(f"  {p}", est.vision_part(p)) for p in VISION_PARTS]
    rows.append(("total", est.total))
    for name, c in rows:
        ai = arithmetic_intensity(c)
        ai_text = "-" if ai is None else f"{ai:.1f}"
        line = f"| {name} | {_si(c.flops)} | {_si(c.tensor_flops)} | {_iec(c.bytes)} | {ai_text} |"
        if peak is not None:
            roof = roofline(c, peak)
            line += f" {_ms(roof.predicted_ns)} | {roof.bound or '-'} |"
        lines.append(line)
    lines += [
        "",
        "## Memory",
        "",
        f"- parameters {est.params:,} ({_iec(est.weight_footprint_bytes)} of weights)",
        f"- KV cache at its largest {_iec(est.kv_cache_bytes)}",
        f"- largest activation working set {_iec(est.peak_activation_bytes)}",
        "",
        "Byte counts are in binary units (1 GiB = 2^30 bytes), as in dsocr analyze's reports; "
        "rates (TB/s) and FLOPs are decimal.",
        "",
        "## Views",
        "",
        "| view | size | per image | tokens | SAM FLOPs | CLIP FLOPs | projector FLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in est.views:
        lines.append(
            f"| {v.kind} | {v.size} | {v.count} | {v.tokens} | {_si(v.sam.flops)} | {_si(v.clip.flops)} | "
            f"{_si(v.projector.flops)} |"
        )
    lines += [
        "",
        "## Modules",
        "",
        "| module | kind | calls | FLOPs | bytes | params | categories (FLOPs) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in module_rows(est):
        if max_depth is not None and r.depth > max_depth:
            continue
        cats = ", ".join(f"{k} {_si(v)}" for k, v in r.categories.items() if v) or "-"
        indent = "\u00a0\u00a0" * r.depth  # non-breaking: kept by Markdown, plain in a terminal
        lines.append(
            f"| {indent}{r.path} | {r.kind} | {r.calls} | {_si(r.cost.flops)} | {_iec(r.cost.bytes)} | "
            f"{r.cost.params:,} | {cats} |"
        )
    return "\n".join(lines) + "\n"
