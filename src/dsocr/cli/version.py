"""``dsocr version``."""

from __future__ import annotations

import dsocr
from dsocr.cli.app import app


@app.command()
def version() -> None:
    """Print the dsocr version."""
    print(f"dsocr {dsocr.__version__}")
