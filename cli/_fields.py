"""Flags built from the config dataclasses' field metadata (:func:`ptycho_k3.config.option`).

A field's name is its flag (``--name`` and ``--name-with-hyphens``), its annotation the value's
type, its metadata the help, choices, lower bound and how the default is stated. The default
stored in the namespace is the caller's (``UNSET`` for commands whose precedence is flag > YAML >
default; the field's own default otherwise). Nothing here imports Keras.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ptycho_k3.cli._common import (
    add_bool,
    add_flag,
    integer,
    non_negative_int,
    number,
    optional_int,
    optional_integer,
    optional_non_negative_int,
    optional_number,
    optional_text,
    positive_int,
)

#: The sentinel meaning "the field's own default" for :func:`add_fields`' ``default``.
OWN_DEFAULT = object()

_INT_PARSERS: dict[Any, Callable[[str], Any]] = {None: integer, 0: non_negative_int,
                                                  1: positive_int}
_OPTIONAL_INT_PARSERS: dict[Any, Callable[[str], Any]] = {
    None: optional_integer, 0: optional_non_negative_int, 1: optional_int}


def value_parser(field: dataclasses.Field) -> Callable[[str], Any]:
    """The argparse ``type=`` of a field, from its annotation (a string under
    ``from __future__ import annotations``) and its ``minimum``."""
    minimum = field.metadata.get("minimum")
    kind = str(field.type).replace(" ", "")
    if field.metadata.get("none_is_default"):  # ``none`` parses to None, the caller drops it
        kind += "|None"
    parsers: dict[str, Callable[[str], Any]] = {
        "int": _INT_PARSERS[minimum], "int|None": _OPTIONAL_INT_PARSERS[minimum],
        "float": number, "float|None": optional_number, "str": str, "str|None": optional_text,
    }
    if kind not in parsers:
        raise TypeError(f"no command-line parser for field {field.name!r} of type {field.type}")
    return parsers[kind]


def default_text(field: dataclasses.Field) -> str:
    """How ``--help`` states a field's default ("" when there is nothing to say)."""
    text = field.metadata.get("default_text")
    if text is not None:
        return text
    value = field.default
    if value is dataclasses.MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(field: dataclasses.Field) -> str:
    if field.metadata.get("hidden"):
        return argparse.SUPPRESS
    default = default_text(field)
    return f"{field.metadata['help']} (default {default})" if default else field.metadata["help"]


def described_fields(cls: type, names: Iterable[str] | None = None,
                     skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that carry a command-line description, in declaration order
    (or in the order of ``names``)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
    if names is not None:
        missing = [n for n in names if n not in fields]
        if missing:
            raise KeyError(f"{cls.__name__} has no described field(s) {missing}")
        return [fields[n] for n in names]
    return [f for name, f in fields.items() if name not in set(skip)]


def add_fields(group: argparse.ArgumentParser | Any, cls: type, *,
               names: Iterable[str] | None = None, skip: Iterable[str] = (),
               flags: Mapping[str, str] | None = None, default: Any = OWN_DEFAULT,
               help_overrides: Mapping[str, str] | None = None) -> None:
    """Add one flag per described field of ``cls`` to ``group``.

    Args:
        names: only these fields, in this order (default: every described field).
        skip: fields left out.
        flags: field name -> flag name where they differ (``batch`` -> ``refine_batch``).
        default: the namespace default (``UNSET``, or :data:`OWN_DEFAULT` for the field's).
        help_overrides: field name -> the whole help text for this command (default included).
    """
    for field in described_fields(cls, names, skip):
        name = (flags or {}).get(field.name, field.name)
        help_ = help_text(field)
        if help_overrides and field.name in help_overrides:
            help_ = help_overrides[field.name]
        value = field.default if default is OWN_DEFAULT else default
        if str(field.type) == "bool":
            add_bool(group, name, help=help_, default=value)
            continue
        extra: dict[str, Any] = {}
        if field.metadata.get("choices") is not None:
            extra["choices"] = field.metadata["choices"]
        if field.metadata.get("metavar") is not None:
            extra["metavar"] = field.metadata["metavar"]
        add_flag(group, name, type=value_parser(field), default=value, help=help_, **extra)


def field_defaults(cls: type, flags: Mapping[str, str] | None = None,
                   skip: Iterable[str] = ()) -> dict[str, Any]:
    """Option name -> default of every described field of ``cls`` (for YAML precedence)."""
    return {(flags or {}).get(f.name, f.name): f.default
            for f in described_fields(cls, skip=skip)}


def config_from(cls: type, options: Mapping[str, Any], **extra: Any) -> Any:
    """``cls`` built from the resolved ``options`` it has fields for (plus ``extra``); an invalid
    value is a :class:`~ptycho_k3.cli._common.UsageError` (exit 2, one line)."""
    from ptycho_k3.cli._common import UsageError
    from ptycho_k3.config import ConfigError

    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in options.items() if k in names}
    try:
        return cls(**{**values, **extra})
    except (ConfigError, ValueError) as exc:
        raise UsageError(str(exc)) from None
