"""A direct call of a command for plain command lines, without typer's parsing machinery.

typer converts every option value through a pydantic ``TypeAdapter`` (importing pydantic and
building the adapters costs about a tenth of a second), a large part of the start-up of
``dsocr analyze`` on a small trace. For the commands in :data:`DIRECT_COMMANDS`,
:func:`direct_call` reads the command's own typer declarations (option names, environment
variables, defaults, ``min``, callbacks) and parses a plain command line itself: long options
(``--out DIR``, ``--out=DIR``), single short options (``-o DIR``, ``-q``), positional
arguments, environment variables. Anything else (help, a bool option's environment variable,
a repeated or unknown option, a value that does not convert, a callback that refuses the
value, a declaration this parser does not know) returns None and typer parses the line as
before, so typer keeps every message and error; tests/test_startup.py checks both give the
same arguments.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Union, get_args, get_origin

#: Commands called directly when their command line is plain.
DIRECT_COMMANDS: Final = frozenset({"analyze"})

#: Declaration attributes that may differ from typer's defaults (everything else must be the default).
_HANDLED: Final = frozenset(
    {
        "default",
        "param_decls",
        "callback",
        "envvar",
        "help",
        "show_default",
        "show_envvar",
        "show_choices",
        "hidden",
        "metavar",
        "rich_help_panel",
        "min",
    }
)

_INT: Final = re.compile(r"[0-9]+")
_FLOAT: Final = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class _Declined(Exception):
    """The command line needs typer."""


def _base(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
        raise _Declined
    return annotation, False


def _convert(kind: Any, raw: str, minimum: float | None) -> Any:
    """A command-line string as typer would convert it (or _Declined)."""
    value: Any
    if kind is str:
        value = raw
    elif kind is Path:
        value = Path(raw)
    elif kind is int and _INT.fullmatch(raw):
        value = int(raw)
    elif kind is float and _FLOAT.fullmatch(raw):
        value = float(raw)
    else:
        raise _Declined
    if minimum is not None and value < minimum:
        raise _Declined
    return value


def _unchanged(info: Any) -> bool:
    """Whether ``info`` sets nothing beyond :data:`_HANDLED` (compared with a fresh one of its class)."""
    fresh = type(info)()
    return all(v == getattr(fresh, k, v) for k, v in vars(info).items() if k not in _HANDLED)


def parse(command: Callable[..., Any], argv: list[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of ``command`` for ``argv`` (the words after the command name); _Declined
    when typer must parse it."""
    from typer.models import ArgumentInfo, OptionInfo
    from typer.utils import get_params_from_function

    params = get_params_from_function(command)
    flags: dict[str, str] = {}
    argument: str | None = None
    for name, meta in params.items():
        info = meta.default
        if isinstance(info, OptionInfo) and _unchanged(info):
            for decl in info.param_decls or ():
                if not decl.startswith("-") or "/" in decl or decl in flags:
                    raise _Declined
                flags[decl] = name
            if not info.param_decls:
                raise _Declined
        elif isinstance(info, ArgumentInfo) and _unchanged(info) and argument is None and not info.param_decls:
            argument = name
        else:
            raise _Declined
    given: dict[str, str | bool] = {}
    positional: list[str] = []
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help", "--"):
            raise _Declined
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        flag, eq, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        target = flags.get(flag)
        if target is None or target in given:
            raise _Declined
        name = target
        if _base(params[name].annotation)[0] is bool:
            if eq:
                raise _Declined
            given[name] = True
            continue
        word_value = attached if eq else next(words, None)
        if word_value is None or (not eq and word_value.startswith("-")):
            raise _Declined
        given[name] = word_value
    kwargs: dict[str, Any] = {}
    for name, meta in params.items():
        info = meta.default
        kind, optional = _base(meta.annotation)
        if name == argument:
            if get_origin(kind) is not list or get_args(kind) != (Path,) or not optional:
                raise _Declined
            kwargs[name] = [Path(p) for p in positional] if positional else info.default
            continue
        envvar = info.envvar
        if envvar is not None and not isinstance(envvar, str):
            raise _Declined
        from_env = environ.get(envvar) if envvar else None
        if kind is bool:
            if from_env or info.default is not False:
                raise _Declined
            value: Any = bool(given.get(name, False))
        elif name in given or from_env:
            raw = given.get(name, from_env)
            assert isinstance(raw, str)
            value = _convert(kind, raw, info.min)
        elif info.default is None and optional:
            value = None
        else:
            value = info.default
            if not isinstance(value, kind):
                raise _Declined
        if info.callback is not None:
            value = info.callback(value)
        kwargs[name] = value
    if positional and argument is None:
        raise _Declined
    return kwargs


def direct_call(argv: list[str], commands: Mapping[str, Callable[..., Any]], environ: Mapping[str, str]) -> Any:
    """``argv`` (``COMMAND ARGS...``) called directly when plain; returns the command's result, or the
    :data:`NotImplemented` sentinel when typer must parse the line. Errors raised by the command itself
    propagate."""
    if not argv or argv[0] not in DIRECT_COMMANDS or argv[0] not in commands:
        return NotImplemented
    command = commands[argv[0]]
    try:
        kwargs = parse(command, argv[1:], environ)
    except Exception:  # _Declined, a refused value (typer.BadParameter from a callback), anything unexpected
        return NotImplemented
    return command(**kwargs)
