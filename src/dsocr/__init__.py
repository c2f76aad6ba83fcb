"""dsocr: an Nsight Systems profiler for the DeepSeek-OCR vision-language model."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: Traces (files given, in bytes) below this size are "small": ``dsocr analyze`` then reads their
#: largest tables early, runs polars' in-memory engine and the small-trace allocator settings and
#: skips trimming the C heap; larger ones get the settings that keep the peak memory low.
SMALL_TRACE_BYTES = 64 << 20

#: jemalloc settings (polars' allocator) for big traces: blocks of 64 KiB or more come from
#: jemalloc's dedicated arena for large blocks, which hands freed pages back to the OS at once;
#: smaller freed pages are kept 10 ms for reuse (returning every page at once, small ones too,
#: costs seconds of system time on a 2M-kernel trace); a single arena keeps fewer pages aside.
LEAN_MALLOC_CONF = "narenas:1,oversize_threshold:65536,dirty_decay_ms:10,muzzy_decay_ms:0"
#: What polars itself puts into ``_RJEM_MALLOC_CONF`` when it is imported: a process started
#: from a Python program that imported polars inherits it, which is not a user's choice.
POLARS_DEFAULT_MALLOC_CONF = "dirty_decay_ms:500,muzzy_decay_ms:1000"
#: jemalloc settings for small traces (polars puts its own defaults before them): a single arena, so
#: that pages one thread freed are reused by the others (about 6,000 fewer page faults, ~20 ms, on an
#: 18 MB trace).
SMALL_MALLOC_CONF = "narenas:1"


def lean_allocator(conf: str = LEAN_MALLOC_CONF) -> bool:
    """Make polars' allocator return freed large blocks at once (:data:`LEAN_MALLOC_CONF`: a
    lower peak on big traces at little cost), or use another ``conf``; only effective before polars
    is first imported, and a value the user set in ``_RJEM_MALLOC_CONF`` wins. Returns whether it took effect."""
    inherited = _os.environ.get("_RJEM_MALLOC_CONF")
    if "polars" in _sys.modules or inherited not in (None, POLARS_DEFAULT_MALLOC_CONF):
        return False
    _os.environ["_RJEM_MALLOC_CONF"] = conf
    return True
