"""``--module-ranges``: one NVTX range per medium-granularity module, through forward hooks.

Each range lives in domain ``dsocr.module`` and is named by the module's path in the analytic
model (``vision.sam.blocks.3``, ``decoder.layers.5.moe.experts``, ...), taken from
:meth:`dsocr.execution.replica.Replica.module_paths`. The three containers ``vision.sam``,
``vision.clip`` and ``decoder`` get no range (the stage ranges carry their time); everything
else does: SAM patch embed, blocks, neck and compressor, CLIP layers, projector, the decoder's
token embedding, layers, attention, dense MLP or MoE (router, experts, shared experts), final
norm and ``lm_head``. Ranges nest as the modules call each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from dsocr.capture.worker_ranges import emitter
from dsocr.contract import module_paths as mp
from dsocr.contract import nvtx_names as names

#: Paths that get no module range (their time is the stage ranges').
CONTAINERS: Final = frozenset({mp.SAM, mp.CLIP, mp.DECODER})


def ranged_paths(paths: Mapping[str, Any]) -> dict[str, Any]:
    """The module paths that get a range (all but :data:`CONTAINERS`)."""
    return {p: m for p, m in paths.items() if p not in CONTAINERS}


@attrs.define
class ModuleRanges:
    """Installed hooks; :meth:`remove` takes them off again."""

    handles: list[Any] = attrs.field(factory=list)
    paths: tuple[str, ...] = ()

    def remove(self) -> None:
        """Remove every hook."""
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _pre_hook(path: str) -> Callable[..., None]:
    def hook(_module: Any, _args: Any) -> None:
        emitter().push(path, names.MODULE_DOMAIN)

    return hook


def _post_hook() -> Callable[..., None]:
    def hook(_module: Any, _args: Any, _output: Any) -> None:
        emitter().pop(names.MODULE_DOMAIN)

    return hook


def install(paths: Mapping[str, Any]) -> ModuleRanges:
    """Hook every ranged module of ``paths`` (path -> torch module); returns the handles."""
    out = ModuleRanges(paths=tuple(ranged_paths(paths)))
    for path, module in ranged_paths(paths).items():
        out.handles.append(module.register_forward_pre_hook(_pre_hook(path)))
        out.handles.append(module.register_forward_hook(_post_hook(), always_call=True))
    return out
