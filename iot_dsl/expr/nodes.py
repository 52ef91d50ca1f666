"""The expression AST: small frozen dataclasses, each with a ``start``/``end`` span (0-based character offsets
into the expression text, ``end`` exclusive).

Comparisons are binary and do not chain (``a < b < c`` is a syntax error); ``and``/``or`` chains are flat
(:class:`BoolOp` with two or more operands). Parentheses leave no node of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .types import Type

__all__ = [
    "Node",
    "Literal",
    "Duration",
    "Field",
    "Unary",
    "Binary",
    "Compare",
    "BoolOp",
    "Not",
    "In",
    "ListLit",
    "Call",
    "children",
    "walk",
    "field_paths",
]


@dataclass(frozen=True)
class Node:
    """Base of every node: the span of source text it was parsed from."""

    start: int = field(default=0, kw_only=True)
    end: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class Literal(Node):
    """A constant: number, string, boolean or null; ``type`` is its :class:`Type` (``integer`` for ``42``)."""

    value: Any
    type: Type


@dataclass(frozen=True)
class Duration(Node):
    """A duration literal such as ``30s``/``500ms``/``2d``, held in seconds (type ``duration``)."""

    seconds: float


@dataclass(frozen=True)
class Field(Node):
    """A name or dotted path: ``temp``, ``device.firmware``, ``event.payload.x``."""

    path: tuple[str, ...]

    @property
    def dotted(self) -> str:
        """The path as written: ``device.firmware``."""
        return ".".join(self.path)


@dataclass(frozen=True)
class Unary(Node):
    """Arithmetic negation (``op`` is ``'-'``)."""

    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    """Arithmetic: ``op`` is one of ``+ - * / % **``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    """A comparison: ``op`` is one of ``== != < <= > >=``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class BoolOp(Node):
    """``a and b and c`` / ``a or b`` (``op`` is ``'and'`` or ``'or'``; two or more operands)."""

    op: str
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    """Boolean negation."""

    operand: Node


@dataclass(frozen=True)
class In(Node):
    """Membership ``item in container`` (``negate`` for ``not in``); container is a list or a string."""

    item: Node
    container: Node
    negate: bool = False


@dataclass(frozen=True)
class ListLit(Node):
    """A list display ``[a, b, c]``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Call(Node):
    """A call of a registered function (there are no methods and no calls of computed values)."""

    name: str
    args: tuple[Node, ...]


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, left to right."""
    if isinstance(node, (Unary, Not)):
        return (node.operand,)
    if isinstance(node, (Binary, Compare)):
        return (node.left, node.right)
    if isinstance(node, BoolOp):
        return node.operands
    if isinstance(node, In):
        return (node.item, node.container)
    if isinstance(node, ListLit):
        return node.items
    if isinstance(node, Call):
        return node.args
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children (iterative; no recursion)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def field_paths(node: Node) -> set[tuple[str, ...]]:
    """The field paths an expression reads, e.g. ``{("temp",), ("device", "firmware")}``."""
    return {n.path for n in walk(node) if isinstance(n, Field)}
