"""The vendor path: the checkpoint's own modules and ``generate``, run the way ``model.infer(...)`` runs them.

``infer(tokenizer, prompt, image_file, base_size, image_size, crop_mode)`` with its default
``eval_mode=False`` (modeling_deepseekocr.py) does, and so does :meth:`VendorModel.generate`:

- preprocessing with the checkpoint's own functions (:meth:`VendorModel.prepare`): the global view
  ``ImageOps.pad`` to ``base_size`` (crop mode) or resized/padded to ``image_size``, the crops from
  its ``dynamic_preprocess``, each through its ``BasicImageTransform`` (ToTensor, Normalize 0.5)
  and converted to bf16; the ids BOS, the text before ``<image>``, ``<image>`` (id 128815) once per
  image embedding, the text after it; ``images_seq_mask`` marking the image ids;
- ``generate(ids, images=[(crops, global)], images_seq_mask, images_spatial_crop,
  temperature=0.0, eos_token_id, max_new_tokens, no_repeat_ngram_size=20, use_cache=True)`` under
  ``torch.autocast("cuda", bfloat16)`` and ``torch.no_grad()``, the model in bf16;
- attention as the checkpoint's code chooses it: ``eager`` (transformers' default for it) or
  ``flash_attention_2`` (needs flash-attn); it has no SDPA path.

Differences, on purpose: ``max_new_tokens`` is dsocr's (infer hard-codes 8192, which random
weights never stop before), and there is no text streamer (``NoEOSTextStreamer`` decodes every
token with the tokenizer, and no DeepSeek tokenizer is available offline). The modes are infer's
arguments: tiny (512, 512, no crops), small (640, 640), base (1024, 1024), large (1280, 1280),
gundam (1024, 640, crop mode); crops are always the checkpoint's own choice.

On the CPU (tests only) the checkpoint's forward calls ``.cuda()`` unconditionally
(``images_seq_mask[idx].unsqueeze(-1).cuda()``): there :func:`cuda_calls_stay_on_cpu` makes
``Tensor.cuda`` return the tensor itself for the duration of ``generate``, and autocast (a
CUDA autocast, off on the CPU) is left out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from collections.abc import Iterator
from typing import Any, Final

import attrs

from dsocr.contract.errors import BadInput, EnvironmentProblem
from dsocr.execution.checkpoint_rules import (
    BUFFERS,
    ModelPlan,
    architecture_from_config,
    check_transformers,
)
from dsocr.model.architecture import Architecture

#: ``infer``'s ``<image>`` id.
IMAGE_TOKEN_ID: Final = 128815
#: ``generate`` arguments ``infer`` passes by default (``eval_mode=False``).
NO_REPEAT_NGRAM_SIZE: Final = 20
TEMPERATURE: Final = 0.0
#: dsocr modes -> infer's ``(base_size, image_size, crop_mode)``.
INFER_MODES: Final[dict[str, tuple[int, int, bool]]] = {
    "tiny": (512, 512, False),
    "small": (640, 640, False),
    "base": (1024, 1024, False),
    "large": (1280, 1280, False),
    "gundam": (1024, 640, True),
}
ATTN_EAGER: Final = "eager"
ATTN_FLASH: Final = "flash_attention_2"
ATTENTIONS: Final = (ATTN_EAGER, ATTN_FLASH)
#: infer's image geometry.
PATCH_SIZE: Final = 16
DOWNSAMPLE: Final = 4
#: infer's crop-mode threshold: pages no larger than this on both sides get no crops.
CROP_THRESHOLD: Final = 640


def check_options(mode: str, crops: str, dtype: str, attn: str) -> None:
    """BadInput for options the vendor path cannot honour (it runs as infer does)."""
    if mode not in INFER_MODES:
        raise BadInput(
            f"--mode {mode}: the checkpoint's infer has no such mode (its crops are always 640 px): "
            f"use one of {', '.join(INFER_MODES)} with --trust-remote-code"
        )
    if crops != "auto":
        raise BadInput(
            f"--crops {crops}: the checkpoint's own code chooses the crops itself: "
            "drop --crops with --trust-remote-code"
        )
    if dtype not in ("auto", "bfloat16"):
        raise BadInput(
            f"--dtype {dtype}: the checkpoint's infer runs in bfloat16 (bf16 images, bf16 model): "
            "drop --dtype with --trust-remote-code"
        )
    if attn not in ATTENTIONS:
        raise BadInput(
            f"--attn {attn}: the checkpoint's own code has no {attn} path: use --attn eager (its default) or "
            "flash_attention_2 (needs flash-attn)"
        )


def check_attention(attn: str) -> None:
    """EnvironmentProblem when ``flash_attention_2`` is asked for and flash-attn is not installed."""
    if attn == ATTN_FLASH and importlib.util.find_spec("flash_attn") is None:
        raise EnvironmentProblem(
            "--attn flash_attention_2: the flash-attn package is not installed: pip install flash-attn "
            "(a CUDA build matching torch), or use --attn eager (the checkpoint's code without flash-attn)"
        )


@contextlib.contextmanager
def cuda_calls_stay_on_cpu(torch: Any, device: Any) -> Iterator[None]:
    """On the CPU only (tests): ``Tensor.cuda`` returns the tensor itself, because the checkpoint's forward
    calls ``.cuda()`` unconditionally. On a CUDA device nothing changes."""
    if torch.device(device).type != "cpu":
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


@attrs.frozen
class VendorPage:
    """One page as infer hands it to ``generate`` (tensors on the device)."""

    input_ids: Any  #: (1, L) long
    images_crop: Any  #: (n, 3, 640, 640) bf16, or zeros (1, 3, base, base) without crops (as infer)
    images_ori: Any  #: (1, 3, S, S) bf16
    images_seq_mask: Any  #: (1, L) bool
    images_spatial_crop: Any  #: (1, 2) long: (width, height) crops
    grid: tuple[int, int]
    image_tokens: int  #: ``<image>`` ids in ``input_ids``

    @property
    def prompt_length(self) -> int:
        """The prefill length ``L``."""
        return int(self.input_ids.shape[1])

    @property
    def views(self) -> int:
        """Vision passes in the forward: the crops (one batch) and the global view, or the global view alone."""
        return 2 if self.grid != (1, 1) else 1


@attrs.define(eq=False)
class VendorModel:
    """The checkpoint's ``DeepseekOCRForCausalLM`` (its own code) and the module it came from."""

    arch: Architecture  #: sizes from config.json (for module paths and the vocabulary)
    root: Any  #: DeepseekOCRForCausalLM
    code: Any  #: the checkpoint's modeling_deepseekocr module (dynamic_preprocess, BasicImageTransform)
    device: Any
    dtype: Any
    attn_implementation: str
    eos_token_id: int | None = None

    def parameter_count(self) -> int:
        """Number of parameters."""
        return sum(int(p.numel()) for p in self.root.parameters())

    def vision_modules(self) -> dict[str, Any]:
        """The vision stages' modules: ``sam``, ``clip``, ``projector`` (the contract's names)."""
        from dsocr.contract import nvtx_names as names

        m = self.root.model
        return {names.SAM: m.sam_model, names.CLIP: m.vision_model, names.PROJECTOR: m.projector}

    def module_paths(self) -> dict[str, Any]:
        """The contract's module paths that exist as single modules in the checkpoint's code."""
        from dsocr.contract import module_paths as mp

        m = self.root.model
        paths: dict[str, Any] = {mp.SAM: m.sam_model, mp.SAM_NECK: m.sam_model.neck, mp.CLIP: m.vision_model}
        paths |= {mp.PROJECTOR: m.projector, mp.DECODER: m, mp.EMBED_TOKENS: m.embed_tokens, mp.DECODER_NORM: m.norm}
        paths[mp.LM_HEAD] = self.root.lm_head
        paths |= {mp.sam_block(i): b for i, b in enumerate(m.sam_model.blocks)}
        paths |= {mp.clip_layer(i): b for i, b in enumerate(m.vision_model.transformer.layers)}
        for i, layer in enumerate(m.layers):
            paths[mp.decoder_layer(i)] = layer
            paths[mp.decoder_attention(i)] = layer.self_attn
            if self.arch.decoder.is_moe(i):
                paths[mp.decoder_moe(i)] = layer.mlp
                paths[mp.decoder_moe_router(i)] = layer.mlp.gate
                paths[mp.decoder_moe_shared(i)] = layer.mlp.shared_experts
            else:
                paths[mp.decoder_mlp(i)] = layer.mlp
        return paths

    def prepare(self, image: Any, mode: str, ids_before: tuple[int, ...], ids_after: tuple[int, ...]) -> VendorPage:
        """infer's preprocessing of one page (its own functions), on the device; ``ids_before`` starts with BOS."""
        import torch
        from PIL import ImageOps

        base_size, image_size, crop_mode = INFER_MODES[mode]
        transform = self.code.BasicImageTransform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), normalize=True)
        pad = tuple(int(x * 255) for x in transform.mean)
        image = image.convert("RGB")
        crops: list[Any] = []
        if crop_mode:
            if image.size[0] <= CROP_THRESHOLD and image.size[1] <= CROP_THRESHOLD:
                raw, (w, h) = [], (1, 1)
            else:
                raw, (w, h) = self.code.dynamic_preprocess(image)
            glob = transform(ImageOps.pad(image, (base_size, base_size), color=pad)).to(torch.bfloat16)
            if w > 1 or h > 1:
                crops = [transform(c).to(torch.bfloat16) for c in raw]
            nq = math.ceil((image_size // PATCH_SIZE) / DOWNSAMPLE)
            nq_base = math.ceil((base_size // PATCH_SIZE) / DOWNSAMPLE)
            tokens = (nq_base + 1) * nq_base + 1
            if w > 1 or h > 1:
                tokens += (nq * w + 1) * (nq * h)
        else:
            if image_size <= CROP_THRESHOLD:
                image = image.resize((image_size, image_size))
            glob = transform(ImageOps.pad(image, (image_size, image_size), color=pad)).to(torch.bfloat16)
            w, h = 1, 1
            nq = math.ceil((image_size // PATCH_SIZE) / DOWNSAMPLE)
            tokens = (nq + 1) * nq + 1
        ids = [*ids_before, *([IMAGE_TOKEN_ID] * tokens), *ids_after]
        mask = [False] * len(ids_before) + [True] * tokens + [False] * len(ids_after)
        images_crop = torch.stack(crops) if crops else torch.zeros((1, 3, base_size, base_size))
        dev = self.device
        return VendorPage(
            input_ids=torch.tensor([ids], dtype=torch.long, device=dev),
            images_crop=images_crop.to(dev),
            images_ori=torch.stack([glob]).to(dev),
            images_seq_mask=torch.tensor([mask], dtype=torch.bool, device=dev),
            images_spatial_crop=torch.tensor([[w, h]], dtype=torch.long),
            grid=(int(w), int(h)),
            image_tokens=tokens,
        )

    def generate(self, page: VendorPage, max_new_tokens: int) -> Any:
        """infer's ``generate`` call (module docstring) with ``max_new_tokens``; the ids, prompt included."""
        import torch

        on_cuda = torch.device(self.device).type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        with cuda_calls_stay_on_cpu(torch, self.device), autocast, torch.no_grad():
            return self.root.generate(
                page.input_ids,
                images=[(page.images_crop, page.images_ori)],
                images_seq_mask=page.images_seq_mask,
                images_spatial_crop=page.images_spatial_crop,
                temperature=TEMPERATURE,
                eos_token_id=self.eos_token_id,
                max_new_tokens=max_new_tokens,
                no_repeat_ngram_size=NO_REPEAT_NGRAM_SIZE,
                use_cache=True,
            )


def _check_parameters(model: Any, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """BadInput when the checkpoint's tensors are not exactly the model's parameters (buffers ignored)."""
    want = {name: tuple(p.shape) for name, p in model.named_parameters()}
    have = {k: v for k, v in shapes.items() if k not in BUFFERS}
    from dsocr.execution.checkpoint import SHOW

    def listing(names: set[str]) -> str:
        items = sorted(names)
        return ", ".join(items[:SHOW]) + (f" and {len(items) - SHOW} more" if len(items) > SHOW else "")

    problems = []
    if extra := set(have) - set(want):
        problems.append(f"{len(extra)} tensors the model has no parameter for ({listing(extra)})")
    if missing := set(want) - set(have):
        problems.append(f"{len(missing)} parameters missing ({listing(missing)})")
    if bad := {n for n in set(want) & set(have) if want[n] != have[n]}:
        problems.append(f"{len(bad)} of the wrong shape ({listing(bad)})")
    if problems:
        raise BadInput(
            f"the weights in {where} do not match its config.json: {'; '.join(problems)}: "
            "put the config.json that came with these weights beside them"
        )


def load_vendor(plan: ModelPlan, *, device: str, seed: int = 0, attn: str = ATTN_EAGER) -> VendorModel:
    """The checkpoint's own model from ``plan`` (weights, or seeded random ones), bf16, on ``device``."""
    check_transformers()
    check_attention(attn)
    import torch
    from transformers import AutoConfig, AutoModel

    directory = str(plan.directory)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=True, local_files_only=True)
    except (ImportError, OSError, ValueError) as exc:
        raise EnvironmentProblem(
            f"the checkpoint's code in {directory} cannot be imported ({str(exc).splitlines()[0]}): it needs "
            "addict, easydict, einops and torchvision besides transformers 4.46.3 (`dsocr doctor` lists them)"
        ) from None
    kwargs: dict[str, Any] = {"trust_remote_code": True, "torch_dtype": torch.bfloat16, "attn_implementation": attn}
    if plan.random_weights:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModel.from_config(config, **kwargs)  # type: ignore[no-untyped-call]
    else:
        from dsocr.execution.checkpoint import read_shapes

        with torch.device("meta"):
            skeleton = AutoModel.from_config(config, **kwargs)  # type: ignore[no-untyped-call]
        _check_parameters(skeleton, read_shapes(list(plan.weights)), directory)
        del skeleton
        model = AutoModel.from_pretrained(
            directory, config=config, local_files_only=True, use_safetensors=True, **kwargs
        )
    model = model.eval().to(device=device, dtype=torch.bfloat16)
    model.requires_grad_(False)
    sizes = plan.sizes
    assert sizes is not None
    return VendorModel(
        arch=architecture_from_config(sizes),
        root=model,
        code=sys.modules[type(model).__module__],
        device=torch.device(device),
        dtype=torch.bfloat16,
        attn_implementation=str(getattr(model.config, "_attn_implementation", attn)),
        eos_token_id=sizes.eos_token_id,
    )
