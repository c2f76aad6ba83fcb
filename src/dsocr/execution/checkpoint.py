"""Load a local DeepSeek-OCR checkpoint (config.json + *.safetensors, vendor names) into the replica.

The map from the vendor's parameter names (its safetensors files) to the replica's is explicit
and generated from the architecture (:func:`vendor_map`): SAM's ``blocks.N.norm1`` ->
``layers.N.layer_norm1``, neck ``neck.0..3`` -> ``conv1/layer_norm1/conv2/layer_norm2``,
compressor ``net_2/net_3`` -> ``proj.conv1/conv2``; CLIP's fused ``qkv_proj`` is split into
``q/k/v_proj`` (rows 0:d, d:2d, 2d:3d); per-expert ``experts.E.{gate,up}_proj`` fill rows
0:I and I:2I of transformers' stacked ``experts.gate_up_proj[E]`` and ``down_proj`` fills
``experts.down_proj[E]``; ``view_seperator`` (the upstream spelling) -> ``view_separator``.
Anything that does not map, in either direction, stops the load with one line listing it.

The architecture is read from the checkpoint itself (layer and expert counts, vocabulary, SAM's
global-attention layers from the sizes of their relative position tables), so smaller synthetic
checkpoints load too. Non-parameter buffers a saved state_dict may hold
(``model.vision_model.embeddings.position_ids``) are ignored. ``trust_remote_code`` runs the
checkpoint's own code instead (:mod:`dsocr.execution.vendor`), which needs the transformers
version the vendor pinned (4.46.3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.execution.checkpoint_rules import BUFFERS, VENDOR_TRANSFORMERS
from dsocr.model.architecture import DEEPSEEK_OCR, Architecture

__all__ = ["VENDOR_TRANSFORMERS", "Piece", "load_model", "vendor_map"]

CONFIG_FILE: Final = "config.json"
#: How many names an error line lists before "and N more".
SHOW: Final = 6


@attrs.frozen
class Piece:
    """Where (part of) one vendor tensor goes in the replica."""

    target: str  #: replica parameter name (``Replica.root`` state-dict key)
    src_rows: tuple[int, int] | None = None  #: rows of the vendor tensor (split of a fused tensor)
    expert: int | None = None  #: index into a stacked expert tensor
    dst_rows: tuple[int, int] | None = None  #: rows of the target (after ``expert``)


def _copy(target: str) -> tuple[Piece, ...]:
    return (Piece(target),)


def vendor_map(arch: Architecture, clip_prefix: str = "clip.") -> dict[str, tuple[Piece, ...]]:
    """Every vendor tensor name of ``arch`` -> the replica pieces it fills."""
    m: dict[str, tuple[Piece, ...]] = {}
    wb = ("weight", "bias")
    s, c, d = arch.sam, arch.clip, arch.decoder
    # SAM
    for k in wb:
        m[f"model.sam_model.patch_embed.proj.{k}"] = _copy(f"sam.patch_embed.projection.{k}")
    m["model.sam_model.pos_embed"] = _copy("sam.pos_embed")
    block_parts = {"norm1": "layer_norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "layer_norm2"}
    block_parts |= {"mlp.lin1": "mlp.lin1", "mlp.lin2": "mlp.lin2"}
    for i in range(s.layers):
        src, dst = f"model.sam_model.blocks.{i}.", f"sam.layers.{i}."
        for a, b in block_parts.items():
            for k in wb:
                m[f"{src}{a}.{k}"] = _copy(f"{dst}{b}.{k}")
        for k in ("rel_pos_h", "rel_pos_w"):
            m[f"{src}attn.{k}"] = _copy(f"{dst}attn.{k}")
    m["model.sam_model.neck.0.weight"] = _copy("sam.neck.conv1.weight")
    m["model.sam_model.neck.2.weight"] = _copy("sam.neck.conv2.weight")
    for k in wb:
        m[f"model.sam_model.neck.1.{k}"] = _copy(f"sam.neck.layer_norm1.{k}")
        m[f"model.sam_model.neck.3.{k}"] = _copy(f"sam.neck.layer_norm2.{k}")
    m["model.sam_model.net_2.weight"] = _copy("sam.proj.conv1.weight")
    m["model.sam_model.net_3.weight"] = _copy("sam.proj.conv2.weight")
    # CLIP
    cp = clip_prefix
    m["model.vision_model.embeddings.class_embedding"] = _copy(f"{cp}embeddings.class_embedding")
    m["model.vision_model.embeddings.patch_embedding.weight"] = _copy(f"{cp}embeddings.patch_embedding.weight")
    m["model.vision_model.embeddings.position_embedding.weight"] = _copy(f"{cp}embeddings.position_embedding.weight")
    for k in wb:
        m[f"model.vision_model.pre_layrnorm.{k}"] = _copy(f"{cp}pre_layrnorm.{k}")
    h = c.hidden
    for i in range(c.layers):
        src, dst = f"model.vision_model.transformer.layers.{i}.", f"{cp}encoder.layers.{i}."
        for k in wb:
            m[f"{src}self_attn.qkv_proj.{k}"] = tuple(
                Piece(f"{dst}self_attn.{p}_proj.{k}", src_rows=(j * h, (j + 1) * h)) for j, p in enumerate("qkv")
            )
            for part in ("self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
                m[f"{src}{part}.{k}"] = _copy(f"{dst}{part}.{k}")
    # projector and layout embeddings
    for k in wb:
        m[f"model.projector.layers.{k}"] = _copy(f"projector.{k}")
    m["model.image_newline"] = _copy("layout.image_newline")
    m["model.view_seperator"] = _copy("layout.view_separator")
    # decoder
    m["model.embed_tokens.weight"] = _copy("decoder.embed_tokens.weight")
    inter = d.moe_intermediate
    for i in range(d.layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        for part in ("input_layernorm", "post_attention_layernorm", *(f"self_attn.{p}_proj" for p in "qkvo")):
            m[f"{src}{part}.weight"] = _copy(f"{dst}{part}.weight")
        if not d.is_moe(i):
            for p in ("gate", "up", "down"):
                m[f"{src}mlp.{p}_proj.weight"] = _copy(f"{dst}mlp.{p}_proj.weight")
            continue
        m[f"{src}mlp.gate.weight"] = _copy(f"{dst}mlp.gate.weight")
        for p in ("gate", "up", "down"):
            m[f"{src}mlp.shared_experts.{p}_proj.weight"] = _copy(f"{dst}mlp.shared_experts.{p}_proj.weight")
        for e in range(d.routed_experts):
            ex = f"{src}mlp.experts.{e}."
            m[f"{ex}gate_proj.weight"] = (Piece(f"{dst}mlp.experts.gate_up_proj", expert=e, dst_rows=(0, inter)),)
            m[f"{ex}up_proj.weight"] = (Piece(f"{dst}mlp.experts.gate_up_proj", expert=e, dst_rows=(inter, 2 * inter)),)
            m[f"{ex}down_proj.weight"] = (Piece(f"{dst}mlp.experts.down_proj", expert=e),)
    m["model.norm.weight"] = _copy("decoder.norm.weight")
    m["lm_head.weight"] = _copy("lm_head.weight")
    return m


def _listing(names: Iterable[str]) -> str:
    items = sorted(names)
    shown = ", ".join(items[:SHOW])
    return f"{shown} and {len(items) - SHOW} more" if len(items) > SHOW else shown


def safetensors_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files; InputNotFound/BadInput when the directory is not one."""
    if not directory.is_dir():
        raise InputNotFound(
            f"checkpoint directory {directory} does not exist: pass --model replica or a local directory"
        )
    if not (directory / CONFIG_FILE).is_file():
        raise BadInput(
            f"checkpoint directory {directory} has no {CONFIG_FILE}: copy the checkpoint's config.json there"
        )
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise BadInput(
            f"checkpoint directory {directory} has no *.safetensors file: copy the checkpoint's weights there"
        )
    return files


def read_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape over all files (header only)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except Exception as exc:  # safetensors raises its own error types
            raise BadInput(f"checkpoint file {f} is not a readable safetensors file ({exc}): re-download it") from None
    return shapes


def without_buffers(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``shapes`` without the non-parameter buffers a saved state_dict may hold (the replica rebuilds them)."""
    return {k: v for k, v in shapes.items() if k not in BUFFERS}


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(mt.group(1)) for name in shapes if (mt := rx.match(name))}
    return max(found) + 1 if found else 0


def infer_architecture(
    shapes: dict[str, tuple[int, ...]], config: dict[str, Any], base: Architecture = DEEPSEEK_OCR
) -> Architecture:
    """The architecture a checkpoint holds: counts and sizes read from its tensors (widths from ``base``)."""
    sam_layers = _count(shapes, r"model\.sam_model\.blocks\.(\d+)\.")
    clip_layers = _count(shapes, r"model\.vision_model\.transformer\.layers\.(\d+)\.")
    dec_layers = _count(shapes, r"model\.layers\.(\d+)\.")
    experts = _count(shapes, r"model\.layers\.\d+\.mlp\.experts\.(\d+)\.")
    if not (sam_layers and clip_layers and dec_layers):
        raise BadInput(
            "checkpoint holds no DeepSeek-OCR tensors in the vendor's names (model.sam_model.blocks.N, "
            "model.vision_model.transformer.layers.N, model.layers.N): use a DeepSeek-OCR checkpoint"
        )
    global_rows = 2 * base.sam.pos_grid - 1
    global_layers = tuple(
        i for i in range(sam_layers) if shapes.get(f"model.sam_model.blocks.{i}.attn.rel_pos_h", (0,))[0] == global_rows
    )
    dense = sum(1 for i in range(dec_layers) if f"model.layers.{i}.mlp.gate_proj.weight" in shapes)
    lang = config.get("language_config") or config.get("text_config") or {}
    dense = int(lang.get("first_k_dense_replace", dense)) if isinstance(lang, dict) else dense
    vocab = shapes.get("model.embed_tokens.weight", (base.decoder.vocab,))[0]
    return attrs.evolve(
        base,
        sam=attrs.evolve(base.sam, layers=sam_layers, global_layers=global_layers),
        clip=attrs.evolve(base.clip, layers=clip_layers),
        decoder=attrs.evolve(
            base.decoder,
            layers=dec_layers,
            routed_experts=experts or base.decoder.routed_experts,
            dense_layers=dense,
            vocab=vocab,
        ),
        name=f"{base.name} (checkpoint)",
    )


def check_mapping(
    mapping: dict[str, tuple[Piece, ...]], shapes: dict[str, tuple[int, ...]], params: dict[str, Any], where: str
) -> None:
    """BadInput listing unmapped names (both directions) and shape mismatches, in one line."""
    unexpected = set(shapes) - set(mapping)
    missing = set(mapping) - set(shapes)
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} tensors the replica has no place for ({_listing(unexpected)})")
        if missing:
            parts.append(f"{len(missing)} tensors the replica needs are missing ({_listing(missing)})")
        raise BadInput(
            f"checkpoint {where} does not map onto the replica: {'; '.join(parts)}: "
            "use a DeepSeek-OCR checkpoint in the vendor's parameter names, or --trust-remote-code"
        )
    bad = []
    for name, pieces in mapping.items():
        want = expected_shape(pieces, params)
        if shapes[name] != want:
            bad.append(f"{name} {list(shapes[name])} != {list(want)}")
    if bad:
        raise BadInput(f"checkpoint {where} has tensors of the wrong shape: {_listing(bad)}: is it DeepSeek-OCR?")


def expected_shape(pieces: tuple[Piece, ...], params: dict[str, Any]) -> tuple[int, ...]:
    """The vendor tensor shape that ``pieces`` expect (from the replica's parameter shapes)."""
    first = pieces[0]
    shape = tuple(params[first.target].shape)
    if first.expert is not None:
        shape = shape[1:]
    if first.dst_rows is not None:
        shape = (first.dst_rows[1] - first.dst_rows[0], *shape[1:])
    if first.src_rows is not None:
        rows = max(p.src_rows[1] for p in pieces if p.src_rows is not None)
        shape = (rows, *shape[1:])
    return shape


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(
            f"{directory / CONFIG_FILE} is not valid JSON ({exc}): restore the checkpoint's config"
        ) from None
    if not isinstance(data, dict):
        raise BadInput(f"{directory / CONFIG_FILE} is not a JSON object: restore the checkpoint's config")
    return data


def load_into(replica: Any, files: list[Path], mapping: dict[str, tuple[Piece, ...]]) -> None:
    """Copy every vendor tensor into its replica pieces (cast to the replica's dtype and device)."""
    import torch
    from safetensors import safe_open

    params = dict(replica.root.named_parameters())
    with torch.no_grad():
        for f in files:
            with safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118
                    if name in BUFFERS:
                        continue
                    tensor = handle.get_tensor(name)
                    for piece in mapping[name]:
                        dst = params[piece.target]
                        if piece.expert is not None:
                            dst = dst[piece.expert]
                        if piece.dst_rows is not None:
                            dst = dst[piece.dst_rows[0] : piece.dst_rows[1]]
                        src = tensor if piece.src_rows is None else tensor[piece.src_rows[0] : piece.src_rows[1]]
                        dst.copy_(src.to(device=dst.device, dtype=dst.dtype))


def check_remote_code_version() -> str:
    """The installed transformers version, or EnvironmentProblem unless it is the vendor's 4.46.3."""
    from dsocr.execution.checkpoint_rules import check_transformers

    return check_transformers()


def load_model(
    directory: Path,
    *,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    base: Architecture = DEEPSEEK_OCR,
) -> Any:
    """A local checkpoint as a model with the replica's interface (the replica itself unless remote code).

    Layer, expert and vocabulary sizes come from the checkpoint, widths and head counts from ``base``.
    """
    if trust_remote_code:  # the checkpoint's own code: dsocr.execution.vendor
        from dsocr.execution.checkpoint_rules import plan_model
        from dsocr.execution.vendor import ATTENTIONS, load_vendor

        attn = attn_implementation if attn_implementation in ATTENTIONS else "eager"
        return load_vendor(plan_model(str(directory), trust_remote_code=True), device=device, seed=seed, attn=attn)
    files = safetensors_files(directory)
    config = _read_config(directory)
    from dsocr.execution.replica import build_replica

    shapes = without_buffers(read_shapes(files))
    arch = infer_architecture(shapes, config, base)
    replica = build_replica(arch, device=device, dtype=dtype, seed=seed, attn_implementation=attn_implementation)
    clip_prefix = "clip.vision_model." if hasattr(replica.clip, "vision_model") else "clip."
    mapping = vendor_map(arch, clip_prefix)
    params = dict(replica.root.named_parameters())
    check_mapping(mapping, shapes, params, str(directory))
    load_into(replica, files, mapping)
    lang = config.get("language_config") or config.get("text_config") or config
    eos = lang.get("eos_token_id") if isinstance(lang, dict) else None
    replica.eos_token_id = int(eos) if isinstance(eos, int) else None
    return replica
