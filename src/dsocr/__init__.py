"""dsocr: an Nsight Systems profiler for the DeepSeek-OCR vision-language model."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: jemalloc settings (polars' allocator) that hand freed pages back to the OS at once.
LEAN_MALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
#: What polars itself puts into ``_RJEM_MALLOC_CONF`` when it is imported: a process started
#: from a Python program that imported polars inherits it, which is not a user's choice.
POLARS_DEFAULT_MALLOC_CONF = "dirty_decay_ms:500,muzzy_decay_ms:1000"


def lean_allocator() -> bool:
    """Make polars' allocator return freed memory at once (lower peak on big traces, a little
    more system time); only effective before polars is first imported, and a value the user
    set in ``_RJEM_MALLOC_CONF`` wins. Returns whether it took effect."""
    inherited = _os.environ.get("_RJEM_MALLOC_CONF")
    if "polars" in _sys.modules or inherited not in (None, POLARS_DEFAULT_MALLOC_CONF):
        return False
    _os.environ["_RJEM_MALLOC_CONF"] = LEAN_MALLOC_CONF
    return True
