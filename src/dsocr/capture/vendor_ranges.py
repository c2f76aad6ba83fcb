"""The vendor path's stage ranges, set from outside the checkpoint's code by forward hooks.

The checkpoint's ``generate`` runs unchanged (:mod:`dsocr.execution.vendor`); the contract's
ranges and timing records come from hooks (:class:`VendorRunner`):

- ``page``: the ``generate`` call of one page (its set-up before the first forward included);
- ``prefill``: from the start of ``generate``'s first forward to the start of the second (the
  first token's logits processing and stop check included), or to the return of ``generate``
  when it makes one token;
- ``vision`` (inside ``prefill``, where the checkpoint runs it): from the first SAM call to the
  return of the last projector call; ``sam``, ``clip``, ``projector``: one forward each per view
  (the crops as one batch, then the global view). The layout of the embeddings (newlines,
  separator) and their scatter into the prompt count as ``prefill``;
- ``decode``: from the start of the second forward to the return of ``generate``;
  ``decode_step`` t: from the start of forward t+1 to the start of the next (the logits
  processors, n-gram blocking and stop checks of ``generate`` included), the last one to the
  return of ``generate``.

Timing is the worker's (:class:`dsocr.capture.timing.StageTimer`: CUDA events, no syncs).
"""

from __future__ import annotations

from typing import Any

import attrs

from dsocr.capture.worker import PagePlan, Prompt, Runner
from dsocr.capture.worker_config import WorkerConfig
from dsocr.contract import nvtx_names as names
from dsocr.contract.errors import RunFailed


@attrs.define
class _Open:
    name: str
    cm: Any
    record: dict[str, Any]


class VendorRunner(Runner):
    """The worker's runner for the checkpoint's own ``generate`` (ranges from hooks, see the module doc)."""

    def __init__(self, cfg: WorkerConfig, model: Any, plans: list[PagePlan], prompt: Prompt, inputs: list[Any]) -> None:
        super().__init__(cfg, model, plans, prompt)
        #: one VendorPage per plan, by the plan's page index (capture-wide in a data-parallel capture)
        self.inputs: dict[int, Any] = {plan.index: page for plan, page in zip(plans, inputs, strict=True)}
        self._open: list[_Open] = []
        self._plan: PagePlan | None = None
        self._repeat: int | None = None
        self._forwards = 0
        self._views_done = 0
        self._view_count: dict[str, int] = {}
        self.handles: list[Any] = []
        for name, module in model.vision_modules().items():
            self.handles.append(module.register_forward_pre_hook(self._vision_pre(name)))
            self.handles.append(module.register_forward_hook(self._vision_post(name), always_call=True))
        self.handles.append(model.root.register_forward_pre_hook(self._forward_pre))

    def remove_hooks(self) -> None:
        """Take the hooks off the model."""
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # --- stage bookkeeping --------------------------------------------------------------------

    def _ctx(self) -> dict[str, Any]:
        assert self._plan is not None
        return {"repeat": self._repeat, "page": self._plan.index}

    def _enter(self, name: str, label: str, payload: int | None = None, **fields: Any) -> dict[str, Any]:
        cm = self.stage(name, label, payload, **fields)
        record = cm.__enter__()
        self._open.append(_Open(name, cm, record))
        return record

    def _is_open(self, name: str) -> bool:
        return any(o.name == name for o in self._open)

    def _exit(self, name: str) -> None:
        top = self._open.pop()
        assert top.name == name, f"closing {name} but {top.name} is open"
        top.cm.__exit__(None, None, None)

    def _close_all(self) -> None:
        while self._open:
            self._exit(self._open[-1].name)

    # --- hooks ----------------------------------------------------------------------------------

    def _vision_pre(self, name: str) -> Any:
        def hook(_module: Any, _args: Any) -> None:
            if self._plan is None:
                return
            views = self._plan.views
            if not self._is_open(names.VISION):
                self._enter(names.VISION, "vision", tokens=views.image_tokens, **self._ctx())
            i = self._view_count.get(name, 0)
            self._view_count[name] = i + 1
            view_tokens = [views.layout.crop_tokens] if views.crops is not None else []
            view_tokens.append(views.layout.global_tokens)
            tokens = view_tokens[i] if i < len(view_tokens) else None
            self._enter(name, f"{name} (view {i})", index=i, tokens=tokens, **self._ctx())

        return hook

    def _vision_post(self, name: str) -> Any:
        def hook(_module: Any, _args: Any, _output: Any) -> None:
            if self._plan is None or not self._open or self._open[-1].name != name:
                return
            self._exit(name)
            if name == names.PROJECTOR:
                self._views_done += 1
                if self._views_done == self.inputs[self._plan.index].views:
                    self._exit(names.VISION)

        return hook

    def _forward_pre(self, _module: Any, _args: Any, *_rest: Any) -> None:
        if self._plan is None:
            return
        i = self._forwards
        self._forwards += 1
        L = self._plan.prefill_length
        if i == 0:
            self._enter(names.PREFILL, "prefill", tokens=L, prefill_length=L, context_length=L, **self._ctx())
            return
        if i == 1:
            while self._is_open(names.PREFILL):  # vision left open by an error inside it: close it too
                self._exit(self._open[-1].name)
            self._enter(names.DECODE, "decode", prefill_length=L, **self._ctx())
        else:
            self._exit(names.DECODE_STEP)
        t = i - 1
        self._enter(
            names.DECODE_STEP,
            f"decode_step {t}",
            payload=t,
            index=t,
            tokens=1,
            prefill_length=L,
            context_length=L + t + 1,
            **self._ctx(),
        )

    # --- one page -------------------------------------------------------------------------------

    def run_page(self, repeat: int | None, plan: PagePlan, steps: int) -> int:
        """The checkpoint's ``generate`` for one page with ``steps + 1`` new tokens; returns the tokens made."""
        torch = self.torch
        grid = "x".join(map(str, plan.views.grid))
        label = f"page {plan.index} ({plan.page.name}, {self.cfg.mode} {grid} crops)"
        self._repeat = repeat
        page = self.inputs[plan.index]
        with self.stage(names.PAGE, label, payload=plan.index, repeat=repeat, page=plan.index) as page_record:
            self._plan, self._forwards, self._views_done, self._view_count = plan, 0, 0, {}
            try:
                ids = self.model.generate(page, steps + 1)
                decode = next((o.record for o in self._open if o.name == names.DECODE), None)
                if decode is not None:
                    decode.update(tokens=self._forwards - 1, context_length=plan.prefill_length + self._forwards - 1)
            except torch.cuda.OutOfMemoryError:
                raise RunFailed(
                    f"CUDA out of memory in {self.describe_what()}: use a smaller mode (--mode base or tiny) "
                    "or a GPU with more free memory"
                ) from None
            finally:
                self._close_all()
                self._plan = None
            generated: int = int(ids.shape[1]) - page.prompt_length
            page_record["tokens"] = generated
        return generated
