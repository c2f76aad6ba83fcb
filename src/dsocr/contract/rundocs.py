"""Reading the JSON documents of a run directory (manifest.json, timing*.json, calibration.json): a missing
file is normal, a corrupt one is named (never silently taken for a missing one)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any


def read_doc(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``path`` and ``None``; or ``None`` and, unless the file is simply absent, one line
    saying which file is unusable and why (``<path>: corrupt (...)``). A FIFO or device is never opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or type(exc).__name__})"
    if not stat.S_ISREG(mode):
        return None, f"{path}: not a regular file"
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        return None, f"{path}: corrupt (not UTF-8 text)"
    except ValueError as exc:
        return None, f"{path}: corrupt (not valid JSON: {exc})"
    if not isinstance(doc, dict):
        return None, f"{path}: corrupt (not a JSON object)"
    return doc, None
