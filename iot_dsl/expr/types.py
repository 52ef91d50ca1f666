"""The expression type lattice and the scope an expression is checked against.

Types: ``number`` (``integer`` is a subtype), ``string``, ``boolean``, ``duration`` (seconds), ``version``
(semantic version), ``null``, ``list[T]`` and ``any`` (unknown until run time; accepted everywhere and guarded
at run time). Declared field types are written by name in YAML; :func:`type_from_name` reads them and
:func:`type_name` writes them back (the two round-trip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Type",
    "NUMBER",
    "INTEGER",
    "STRING",
    "BOOLEAN",
    "DURATION",
    "VERSION",
    "NULL",
    "ANY",
    "LIST",
    "TYPE_NAMES",
    "list_of",
    "type_from_name",
    "type_name",
    "is_numeric",
    "assignable",
    "is_assignable",
    "join",
    "Namespace",
    "Scope",
]


@dataclass(frozen=True)
class Type:
    """One type. ``elem`` is set only for lists (``Type("list", elem=NUMBER)`` is ``list[number]``)."""

    name: str
    elem: Type | None = None

    def __str__(self) -> str:
        return f"list[{self.elem}]" if self.name == "list" else self.name

    @property
    def is_list(self) -> bool:
        """True for ``list[T]``."""
        return self.name == "list"


NUMBER = Type("number")
INTEGER = Type("integer")
STRING = Type("string")
BOOLEAN = Type("boolean")
DURATION = Type("duration")
VERSION = Type("version")
NULL = Type("null")
ANY = Type("any")
LIST = Type("list", elem=ANY)

_SIMPLE: dict[str, Type] = {t.name: t for t in (NUMBER, INTEGER, STRING, BOOLEAN, VERSION, DURATION, ANY)}
#: The type names a workflow may declare (``list`` means ``list[any]``; ``list[T]`` is accepted too).
TYPE_NAMES: tuple[str, ...] = ("number", "integer", "string", "boolean", "version", "duration", "any", "list")


def list_of(elem: Type) -> Type:
    """``list[elem]``."""
    return Type("list", elem=elem)


def type_from_name(name: str) -> Type:
    """Read a declared type name (``"number"``, ``"list"``, ``"list[string]"``, ...) into a :class:`Type`.

    Also accepts ``"null"`` so that every :func:`type_name` output reads back. Raises ``ValueError`` naming the
    valid names for anything else.
    """
    text = name.strip() if isinstance(name, str) else name
    if isinstance(text, str):
        if text in _SIMPLE:
            return _SIMPLE[text]
        if text == "list":
            return LIST
        if text == "null":
            return NULL
        if text.startswith("list[") and text.endswith("]"):
            return list_of(type_from_name(text[5:-1]))
    valid = ", ".join(TYPE_NAMES)
    raise ValueError(f"unknown type {name!r}; valid types are: {valid} (or list[T])")


def type_name(t: Type) -> str:
    """The declared-type spelling of ``t`` (inverse of :func:`type_from_name`)."""
    return str(t)


def is_numeric(t: Type) -> bool:
    """``number`` or ``integer``."""
    return t.name in ("number", "integer")


def assignable(src: Type, dst: Type) -> bool:
    """May a value of type ``src`` be used where ``dst`` is expected? (``any`` and ``null`` fit everywhere.)"""
    if src == dst or dst.name == "any" or src.name in ("any", "null"):
        return True
    if src.name == "integer" and dst.name == "number":
        return True
    if src.is_list and dst.is_list:
        assert src.elem is not None and dst.elem is not None
        return assignable(src.elem, dst.elem)
    return False


#: Alias of :func:`assignable`.
is_assignable = assignable


def join(a: Type, b: Type) -> Type | None:
    """The least type holding both ``a`` and ``b`` (``null`` joins to the other side), or None if incompatible."""
    if a == b:
        return a
    if a.name == "null":
        return b
    if b.name == "null":
        return a
    if a.name == "any" or b.name == "any":
        return ANY
    if is_numeric(a) and is_numeric(b):
        return NUMBER
    if a.is_list and b.is_list:
        assert a.elem is not None and b.elem is not None
        elem = join(a.elem, b.elem)
        return list_of(elem) if elem is not None else None
    return None


@dataclass
class Namespace:
    """A dotted root such as ``device`` or ``event``: ``device.firmware`` reads field ``firmware`` of it.

    ``getter(row)`` returns the mapping at run time; when it is None the mapping is ``row[name]``.
    """

    name: str
    fields: Mapping[str, Type]
    getter: Callable[[Any], Mapping[str, Any]] | None = None


@dataclass
class Scope:
    """What an expression may name: bare ``fields`` (read as ``row[name]``) and dotted ``namespaces``.

    With ``allow_unknown`` an unknown bare name is accepted with type ``any`` (untyped payloads).
    """

    fields: Mapping[str, Type]
    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    allow_unknown: bool = False
