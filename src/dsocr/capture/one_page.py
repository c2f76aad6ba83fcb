"""``dsocr generate``: one page through a model (the replica, a checkpoint in it, or the checkpoint's own code).

Greedy generation of ``max_new_tokens`` tokens with the same model loading, prompt ids and
preprocessing as the capture worker (:mod:`dsocr.capture.worker`), no ranges and no timing. The
result names the prompt length, the generated ids and the five highest logits of the first
generated token (the raw logits of the prefill's last position, before any logits processor),
so two implementations can be compared on the same checkpoint. The checkpoint's own code prints
to stdout from its forward; that goes to stderr here, so ``--json`` stays parseable.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Final

import attrs

from dsocr.capture import inputs as inputs_mod
from dsocr.capture.worker import check_environment, load_model, make_prompt, model_facts
from dsocr.capture.worker_config import WorkerConfig
from dsocr.contract.run_timing import TimingModel
from dsocr.execution.checkpoint_rules import KIND_VENDOR, plan_model

TOP: Final = 5


@attrs.frozen
class TopLogit:
    """One of the first generated token's highest logits."""

    id: int
    logit: float


@attrs.frozen
class ModelInfo:
    """Which model ran: kind (replica, checkpoint, vendor), source (``--model``), execution."""

    kind: str
    source: str
    execution: str
    random_weights: bool
    attn_implementation: str


@attrs.frozen
class GenerateResult:
    """What ``dsocr generate --json`` prints."""

    prompt_length: int
    ids: tuple[int, ...]
    first_token_top: tuple[TopLogit, ...]
    model: ModelInfo
    page: str
    first_token_logits: Any = attrs.field(default=None, repr=False, eq=False)  #: float32 numpy vector

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``first_token_top`` highest first)."""
        return attrs.asdict(
            self,
            recurse=True,
            filter=lambda a, _v: a.name != "first_token_logits",
            value_serializer=lambda _i, _a, v: list(v) if isinstance(v, tuple) else v,
        )


@attrs.frozen
class GenerateSettings:
    """``dsocr generate``'s options."""

    model: str = "replica"
    trust_remote_code: bool = False
    random_weights: bool = False
    page: Path | None = None
    max_new_tokens: int = 32
    device: str = "cuda"
    dtype: str = "auto"
    prompt_tokens: int = 12
    mode: str = "gundam"
    seed: int = 0
    attn: str | None = None
    moe: str = "loop"
    decode: str = "eager"  #: ``graph``/``compile``: the static-cache step (docs/variants.md)

    def worker_config(self, page: inputs_mod.InputPage) -> WorkerConfig:
        """The worker's config for this page (no ranges, no timing file)."""
        attn = self.attn or ("eager" if self.trust_remote_code else None)
        cfg = WorkerConfig(
            pages=(page.ref,),
            timing_out="",
            device=self.device,
            dtype=self.dtype,
            mode=self.mode,
            max_new_tokens=self.max_new_tokens,
            prompt_tokens=self.prompt_tokens,
            seed=self.seed,
            model=self.model,
            trust_remote_code=self.trust_remote_code,
            random_weights=self.random_weights,
            moe=self.moe,
            decode=self.decode,
            capture_range="none",
            progress=False,
        )
        return (attrs.evolve(cfg, attn_implementation=attn) if attn else cfg).validate()


def _top(logits: Any) -> tuple[TopLogit, ...]:
    values, ids = logits.float().reshape(-1).topk(TOP)
    return tuple(TopLogit(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True))


Ran = tuple[int, list[int], Any]  #: prompt length, generated ids, the first token's logits (1-D tensor)


def _vendor(model: Any, cfg: WorkerConfig, image: Any, prompt: Any) -> Ran:
    page = model.prepare(image, cfg.mode, prompt.ids_before, prompt.ids_after)
    first: list[Any] = []

    def keep_first(_module: Any, _args: Any, output: Any) -> None:
        if not first:
            first.append(output.logits[0, -1].detach().float().cpu())

    handle = model.root.register_forward_hook(keep_first)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the checkpoint's forward prints
            ids = model.generate(page, cfg.max_new_tokens)
    finally:
        handle.remove()
    L = page.prompt_length
    return L, [int(i) for i in ids[0, L:].tolist()], first[0]


def _replica(model: Any, cfg: WorkerConfig, image: Any, prompt: Any) -> Ran:
    import torch

    from dsocr.execution.preprocess import preprocess

    views = preprocess(image, cfg.mode, cfg.crops).to(model.device, model.dtype)
    before = torch.tensor(prompt.ids_before, dtype=torch.long, device=model.device)
    after = torch.tensor(prompt.ids_after, dtype=torch.long, device=model.device)
    with torch.inference_mode():
        x = model.embed_prompt(before, model.encode_views(views), after)
        if cfg.decode != "eager":
            return _static(model, cfg, x, prompt.eos_token_id)
        logits, past = model.prefill(x)
        first = logits[0].detach().float().cpu()
        token = torch.argmax(logits, dim=-1, keepdim=True)
        ids = [int(token.item())]
        while len(ids) < cfg.max_new_tokens and ids[-1] != prompt.eos_token_id:
            logits, past = model.decode_step(token, past)
            token = torch.argmax(logits, dim=-1, keepdim=True)
            ids.append(int(token.item()))
    return int(x.shape[1]), ids, first


def _static(model: Any, cfg: WorkerConfig, x: Any, eos: int | None) -> Ran:
    """Static-cache decode (``--decode graph|compile``): all steps on the device, the ids copied to the host once
    at the end and cut after the first EOS (the static step never stops early)."""
    from dsocr.execution.static_decode import StaticDecoder

    dec = StaticDecoder.create(model, 1, int(x.shape[1]), cfg.max_new_tokens, cfg.decode)
    logits = dec.prefill(x)
    first = logits[0].detach().float().cpu()
    for _ in range(cfg.max_new_tokens - 1):
        dec.step()
    ids = [int(i) for i in dec.tokens[0].tolist()]  # the one device-to-host copy of the decode
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos) + 1]
    model.decode, model.cache = cfg.decode, f"static:{dec.cache.length}"
    return int(x.shape[1]), ids, first


def generate_page(settings: GenerateSettings) -> GenerateResult:
    """One page through the model ``settings`` name; one-line errors as the worker's."""
    plan = plan_model(
        settings.model, trust_remote_code=settings.trust_remote_code, random_weights=settings.random_weights
    )
    pages = inputs_mod.collect([settings.page]) if settings.page else inputs_mod.default_pages()[:1]
    page = pages[0]
    cfg = settings.worker_config(page)
    check_environment(cfg)
    import torch

    torch.manual_seed(cfg.seed)
    image = inputs_mod.load_image(page)
    model = load_model(cfg, plan)
    prompt = make_prompt(cfg, model, plan)
    run = _vendor if plan.kind == KIND_VENDOR else _replica
    length, ids, logits = run(model, cfg, image, prompt)
    facts = TimingModel.from_json(model_facts(cfg, plan, model), "timing.json model (as the worker builds it)")
    ex = facts.replica_execution
    replica = (
        f"dsocr's replica: MoE {ex.moe}, decoder attention {ex.attn}, autocast {ex.autocast}, decode {ex.decode}, "
        f"cache {ex.cache}"
        if ex
        else None
    )
    execution = facts.vendor_text or replica or f"dsocr's replica ({facts.attn_implementation} attention)"
    return GenerateResult(
        prompt_length=length,
        ids=tuple(ids),
        first_token_top=_top(logits),
        model=ModelInfo(
            kind=plan.kind,
            source=plan.source.describe(),
            execution=str(execution),
            random_weights=plan.random_weights,
            attn_implementation=str(facts.attn_implementation),
        ),
        page=page.name,
        first_token_logits=logits.numpy(),
    )
