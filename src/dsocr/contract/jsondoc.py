"""Typed JSON documents that read back byte for byte: the machinery under ``run_manifest``, ``run_timing``, ....

A document class is an attrs class whose fields each carry a :func:`field` spec (the JSON key, how to
check and convert the value). :func:`parse` builds it from a JSON object, checking every known field's
type and naming the file and the field on a bad value (:class:`~dsocr.contract.errors.BadInput`, one
line); keys it does not know ride along in ``extra``. ``keys`` keeps the order of the keys read (or
the field order for a document built in memory), so :func:`dump` writes what was read, unchanged:
an absent key stays absent, a ``null`` stays ``null``, an unknown key keeps its place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs

from dsocr.contract.errors import BadInput

T = TypeVar("T")
D = TypeVar("D", bound="JsonDoc")

#: Converts one JSON value at ``where`` (``file: a.b[3].c``); raises :class:`BadInput` on a bad value.
Parser = Callable[[Any, "Where"], Any]
#: Turns a field's value back into JSON data.
Dumper = Callable[[Any], Any]

_SPEC: Final = "dsocr.jsondoc"


@attrs.frozen
class Where:
    """Where a value sits: the file and the dotted path of the field (for error lines)."""

    file: str
    path: str = ""

    def key(self, name: str) -> Where:
        """The field ``name`` below this one."""
        return Where(self.file, f"{self.path}.{name}" if self.path else name)

    def item(self, i: int) -> Where:
        """The ``i``-th item of this list."""
        return Where(self.file, f"{self.path}[{i}]")

    def bad(self, value: Any, expected: str) -> BadInput:
        """The error for a value of the wrong kind."""
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return BadInput(
            f"{self.file}: field {self.path or '(top level)'} is {shown}, expected {expected}; "
            "restore the file or recapture"
        )


@attrs.frozen
class Spec:
    """How one field reads and writes (``key``: its JSON key)."""

    key: str
    parse: Parser
    dump: Dumper


def _same(value: Any) -> Any:
    return value


def field(
    parse: Parser, default: Any = None, *, key: str | None = None, dump: Dumper = _same, factory: Any = None
) -> Any:
    """An attrs field read by ``parse`` (written by ``dump``) under JSON key ``key`` (the field's name)."""
    meta = {_SPEC: Spec(key or "", parse, dump)}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta)
    return attrs.field(default=default, metadata=meta)


@attrs.frozen
class JsonDoc:
    """Base of the typed documents (attrs, frozen): ``keys``, the JSON key order (None: every field, in field
    order: a document built in memory), and
    ``extra``, the keys no field reads (kept, written back in place)."""

    keys: tuple[str, ...] | None = attrs.field(default=None, kw_only=True, repr=False, eq=False)
    extra: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, repr=False, eq=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with the keys in ``keys`` order (the order read, or the field order)."""
        return dump(self)

    @classmethod
    def from_json(cls: type[D], data: Any, source: str = "document") -> D:
        """Build from JSON data; BadInput names ``source`` (the file) and the field on a bad value."""
        return parse(cls, data, Where(source))

    def has(self, key: str) -> bool:
        """Whether the JSON key ``key`` is in the document (read from the file, or set in memory)."""
        return key in (self.keys if self.keys is not None else _default_keys(self))

    def with_(self: D, **changes: Any) -> D:
        """A copy with ``changes``; a key that was absent is appended (as a writer adding a field)."""
        names = _names(type(self))
        keys = self.keys if self.keys is not None else _default_keys(self)
        new = [names[f] for f in changes if names[f] not in keys]
        return attrs.evolve(self, keys=(*keys, *new), **changes)


def field_keys(cls: type[JsonDoc]) -> tuple[str, ...]:
    """The JSON keys of ``cls``'s fields, in field order."""
    return tuple(s.key for s in _specs(cls).values())


def _default_keys(doc: JsonDoc) -> tuple[str, ...]:
    return (*(s.key for s in _specs(type(doc)).values()), *doc.extra)


_SPECS: dict[type, dict[str, Spec]] = {}


def _specs(cls: type) -> dict[str, Spec]:
    """Field name -> spec (computed once per class)."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    out: dict[str, Spec] = {}
    for f in attrs.fields(cls):
        spec = f.metadata.get(_SPEC)
        if spec is not None:
            out[f.name] = Spec(spec.key or f.name, spec.parse, spec.dump)
    _SPECS[cls] = out
    return out


def _names(cls: type) -> dict[str, str]:
    """Field name -> JSON key."""
    return {name: s.key for name, s in _specs(cls).items()}


_BY_KEY: dict[type, dict[str, tuple[str, Spec]]] = {}


def _by_key(cls: type) -> dict[str, tuple[str, Spec]]:
    """JSON key -> (field name, spec), computed once per class."""
    found = _BY_KEY.get(cls)
    if found is None:
        found = _BY_KEY[cls] = {s.key: (name, s) for name, s in _specs(cls).items()}
    return found


def parse(cls: type[D], data: Any, where: Where) -> D:
    """Build ``cls`` from the JSON object ``data``; BadInput names the file and field on a bad value."""
    if not isinstance(data, dict):
        raise where.bad(data, "a JSON object")
    by_key = _by_key(cls)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        found = by_key.get(key)
        if found is None:
            extra[key] = value
            continue
        name, spec = found
        values[name] = spec.parse(value, where.key(key))
    return cls(**values, keys=tuple(data), extra=extra)


def dump(doc: JsonDoc) -> dict[str, Any]:
    """The JSON object of ``doc`` (keys in ``doc.keys`` order; every field when ``keys`` is None)."""
    by_key = _by_key(type(doc))
    keys = doc.keys if doc.keys is not None else _default_keys(doc)
    out: dict[str, Any] = {}
    for key in keys:
        found = by_key.get(key)
        if found is None:
            if key in doc.extra:
                out[key] = doc.extra[key]
            continue
        name, spec = found
        out[key] = spec.dump(getattr(doc, name))
    return out


# ---- parsers: each checks one JSON value and returns it (unchanged where JSON has the type) ----


def string(value: Any, where: Where) -> str:
    """A string."""
    if not isinstance(value, str):
        raise where.bad(value, "a string")
    return value


def integer(value: Any, where: Where) -> int:
    """An integer (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise where.bad(value, "an integer")
    return value


def number(value: Any, where: Where) -> float:
    """A number (an int stays an int, so it writes back unchanged)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise where.bad(value, "a number")
    return value


def boolean(value: Any, where: Where) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise where.bad(value, "true or false")
    return value


def obj(value: Any, where: Where) -> dict[str, Any]:
    """A JSON object kept as is (free-form facts: environment, config, ...)."""
    if not isinstance(value, dict):
        raise where.bad(value, "a JSON object")
    return value


def optional(parser: Callable[[Any, Where], T]) -> Callable[[Any, Where], T | None]:
    """``parser``'s value or null."""

    def parse_optional(value: Any, where: Where) -> T | None:
        return None if value is None else parser(value, where)

    return parse_optional


def listed(parser: Callable[[Any, Where], T]) -> Callable[[Any, Where], tuple[T, ...]]:
    """A JSON list of ``parser``'s values, as a tuple (written back as a list)."""

    def parse_list(value: Any, where: Where) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise where.bad(value, "a list")
        return tuple(parser(v, where.item(i)) for i, v in enumerate(value))

    return parse_list


def nested(cls: type[D]) -> Callable[[Any, Where], D]:
    """A nested document."""

    def parse_nested(value: Any, where: Where) -> D:
        return parse(cls, value, where)

    return parse_nested


def dump_doc(value: JsonDoc | None) -> Any:
    """A nested document's JSON (null stays null)."""
    return None if value is None else value.to_json()


def dump_docs(values: tuple[JsonDoc, ...] | None) -> Any:
    """A list of nested documents' JSON."""
    return None if values is None else [v.to_json() for v in values]


def dump_list(value: tuple[Any, ...] | None) -> Any:
    """A tuple as a JSON list."""
    return None if value is None else list(value)
