"""Option value checks for the command line: a bad value is a usage error (exit 2) naming the option.

Each ``*_value`` is a typer ``callback=``: it returns the value unchanged (``None`` passes) or raises
``typer.BadParameter``, which click prints as ``Invalid value for '--OPTION': ...`` with the
command's usage line. Library functions keep raising ``BadInput`` for config files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import typer

from dsocr.contract.errors import BadInput

T = TypeVar("T")

#: Devices ``dsocr capture`` runs on.
DEVICE_HELP: Final = "use cuda, cuda:N (N a GPU index) or cpu"

#: ``--attn`` (the replica's decoder attention) and ``--moe`` (its MoE execution) values; the first is the vendor's.
ATTN_NAMES: Final = ("eager", "sdpa")
MOE_NAMES: Final = ("loop", "grouped")

#: ``--dtype`` names: torch's and the analytic model's short ones.
DTYPE_NAMES: Final = ("auto", "bfloat16", "float16", "float32", "bf16", "fp16", "fp32")


def _checked(check: Callable[[Any], object]) -> Callable[[T], T]:
    """A callback running ``check`` on a given value; its ``BadInput`` becomes a usage error."""

    def callback(value: T) -> T:
        if value is None:
            return value
        try:
            check(value)
        except BadInput as exc:
            raise typer.BadParameter(exc.message) from None
        return value

    return callback


def _mode(value: str) -> None:
    from dsocr.model.modes import get_mode

    get_mode(value)


def _crops(value: str) -> None:
    from dsocr.model.modes import parse_grid

    if value.strip().lower() != "auto":
        parse_grid(value)


def _size(value: str) -> None:
    from dsocr.model.modes import parse_size

    parse_size(value)


def _context(value: str) -> None:
    from dsocr.analytic.workload import parse_context

    parse_context(value)


def _workload(value: str) -> None:
    from dsocr.model.workloads import get_workload

    get_workload(value)


def _device(value: str) -> None:
    v = value.strip().lower()
    if v in ("cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return
    raise BadInput(f"{value!r} is not a device: {DEVICE_HELP}")


def _dtype(value: str) -> None:
    if value.strip().lower() not in DTYPE_NAMES:
        raise BadInput(f"{value!r} is not a dtype: use one of {', '.join(DTYPE_NAMES)}")


def _attn(value: str) -> None:
    if value not in ATTN_NAMES:
        raise BadInput(f"{value!r} is not an attention execution: use eager (the vendor's) or sdpa")


def _capture_attn(value: str) -> None:
    if value not in (*ATTN_NAMES, "flash_attention_2"):
        raise BadInput(
            f"{value!r} is not an attention execution: use eager or sdpa (the replica), eager or "
            "flash_attention_2 (--trust-remote-code)"
        )


def _moe(value: str) -> None:
    if value not in MOE_NAMES:
        raise BadInput(f"{value!r} is not an MoE execution: use loop (the vendor's) or grouped")


def _decode(value: str) -> None:
    from dsocr.execution.variants import DECODE_MODES

    if value not in DECODE_MODES:
        raise BadInput(f"{value!r} is not a decode execution: use eager (the default), graph or compile")


def _cuda_graph_trace(value: str) -> None:
    if value not in ("node", "graph"):
        raise BadInput(f"{value!r} is not an nsys CUDA graph trace: use node (every kernel) or graph (one per launch)")


def _scheduler(value: str) -> None:
    """``local`` or a Dask scheduler address, ``[tcp://]host:port``."""
    _, _, rest = value.strip().rpartition("://")
    host, _, port = rest.rpartition(":")
    if value.strip() == "local" or (host and port.isdigit()):
        return
    raise BadInput(f"{value!r} is neither local nor a scheduler address: use local or tcp://HOST:PORT")


def _positive(value: float) -> None:
    if not value > 0:
        raise BadInput(f"{value:g} is not a positive number")


mode_value: Final = _checked(_mode)
crops_value: Final = _checked(_crops)
size_value: Final = _checked(_size)
context_value: Final = _checked(_context)
workload_value: Final = _checked(_workload)
device_value: Final = _checked(_device)
dtype_value: Final = _checked(_dtype)
positive_value: Final = _checked(_positive)
attn_value: Final = _checked(_attn)
capture_attn_value: Final = _checked(_capture_attn)
moe_value: Final = _checked(_moe)
decode_value: Final = _checked(_decode)
cuda_graph_trace_value: Final = _checked(_cuda_graph_trace)
scheduler_value: Final = _checked(_scheduler)
