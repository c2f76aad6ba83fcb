"""The jinja2 environments of the report templates, their compiled code cached on disk.

Compiling the templates took about a tenth of a second of every ``dsocr analyze`` run, so the compiled code is kept in
``<cache>/jinja2-<jinja2 version>-<kind>`` (``<cache>``: :func:`dsocr.analyze.inputs.cache_dir`,
where ``.sqlite.xz`` traces are decompressed too). jinja2 checks each entry against the
template's source and Python version, so an edited template or another interpreter recompiles.
When the directory cannot be made or written, templates are compiled in memory as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from typing import Any, Final

import jinja2
from jinja2.bccache import Bucket

from dsocr.analyze.inputs import cache_dir

#: Template package and folder (packaged with dsocr: pyproject's package-data).
PACKAGE: Final = ("dsocr.report", "templates")


class QuietBytecodeCache(jinja2.FileSystemBytecodeCache):
    """A file-system bytecode cache that never fails a render: unreadable or unwritable entries are skipped."""

    def load_bytecode(self, bucket: Bucket) -> None:
        """Load a cached entry if there is a readable one."""
        try:
            super().load_bytecode(bucket)
        except (OSError, ValueError, EOFError):
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Store the compiled template (silently skipped when the directory is not writable)."""
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _stable(value: object) -> object:
    """An option value as something whose repr does not change between runs."""
    if value is None or isinstance(value, bool | int | str | tuple):
        return value
    return getattr(value, "__qualname__", type(value).__qualname__)


def bytecode_cache(kind: str, options: Mapping[str, object]) -> jinja2.BytecodeCache | None:
    """The on-disk cache of one environment (named ``kind``; its ``options`` are part of the key, since
    they shape the compiled code), or None when the directory cannot be made or written, or could be
    written by another user (cached code is executed, as jinja2 checks for its own default directory)."""
    key = hashlib.sha256(repr(sorted((k, _stable(v)) for k, v in options.items())).encode()).hexdigest()[:12]
    directory = cache_dir() / f"jinja2-{jinja2.__version__}-{kind}-{key}"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = directory.stat()
    except OSError:
        return None
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return None
    return QuietBytecodeCache(str(directory))


def environment(kind: str, autoescape: tuple[str, ...] | bool = False, **options: Any) -> jinja2.Environment:
    """A jinja2 environment over the report templates (``autoescape``: file extensions to escape, or
    all/none); ``kind`` names it in the cache directory."""
    escape = jinja2.select_autoescape(list(autoescape)) if isinstance(autoescape, tuple) else autoescape
    return jinja2.Environment(
        loader=jinja2.PackageLoader(*PACKAGE),
        bytecode_cache=bytecode_cache(kind, {**options, "autoescape": autoescape}),
        autoescape=escape,
        **options,
    )
