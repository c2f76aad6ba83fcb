"""The typer application every command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dsocr",
    help=(
        "Nsight Systems profiler for DeepSeek-OCR: capture on a GPU, analyze any nsys SQLite "
        "export, model FLOPs/MFU, compare runs. Every option can also be set through the "
        "DSOCR_* environment variable shown beside it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Nsight Systems profiler for DeepSeek-OCR."""
