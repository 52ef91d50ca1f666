"""Expression text -> AST (:mod:`.nodes`), with every error an :class:`~iot_dsl.errors.ExprError` at an offset.

Limits, enforced before Lark runs: at most :data:`MAX_LENGTH` characters (code ``too_long``) and at most
:data:`MAX_BRACKETS` nested ``(``/``[`` (code ``too_deep``; string literals are skipped). After parsing, the
tree depth is measured without recursion and capped at :data:`MAX_DEPTH` (code ``too_deep``), which bounds
the recursion of every later stage. Other codes: ``syntax`` (incl. bad escapes), ``refused`` (a name starting
with ``_``), ``too_large`` (a numeric literal beyond 1e300).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import ExprError
from . import nodes as n
from .grammar import get_parser
from .types import BOOLEAN, INTEGER, NULL, NUMBER, STRING

__all__ = ["parse_expr", "MAX_LENGTH", "MAX_BRACKETS", "MAX_DEPTH", "MAX_MAGNITUDE"]

MAX_LENGTH = 4096
MAX_BRACKETS = 32
MAX_DEPTH = 100
#: Largest absolute value a constant may have (literals here; folded constants in the checker).
MAX_MAGNITUDE = 1e300

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def parse_expr(text: str) -> n.Node:
    """Parse one expression; returns the root node or raises :class:`ExprError` (see module doc for codes)."""
    if not isinstance(text, str):
        raise ExprError(f"an expression must be text, got {type(text).__name__}", code="syntax")
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"expression too long ({len(text)} characters; the limit is {MAX_LENGTH})",
            code="too_long",
            offset=MAX_LENGTH,
            end_offset=len(text),
        )
    if not text.strip():
        raise ExprError("empty expression", code="syntax", hint="write a value or a condition, e.g. temp > 90")
    _check_brackets(text)
    try:
        tree = get_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_depth(tree)
    return _build(tree)


# ---- limits ---------------------------------------------------------------------------------------------------


def _check_brackets(text: str) -> None:
    """Refuse more than MAX_BRACKETS nested brackets; string literals are skipped (an unterminated one ends it)."""
    depth = 0
    i, size = 0, len(text)
    while i < size:
        ch = text[i]
        if ch in "\"'":
            j = i + 1
            while j < size and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch in "([":
            depth += 1
            if depth > MAX_BRACKETS:
                raise ExprError(
                    f"expression nests brackets too deeply (more than {MAX_BRACKETS} levels)",
                    code="too_deep",
                    offset=i,
                    end_offset=i + 1,
                )
        elif ch in ")]":
            depth -= 1
        i += 1


def _check_depth(tree: Tree[Token]) -> None:
    """Refuse parse trees deeper than MAX_DEPTH (e.g. ``- - - ... x`` or very long ``a + b + ...``), iteratively."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(
                f"expression nests too deeply (more than {MAX_DEPTH} levels)",
                code="too_deep",
                offset=node.meta.start_pos,
                end_offset=node.meta.end_pos,
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


# ---- syntax errors --------------------------------------------------------------------------------------------

_VALUE_TOKENS = frozenset({"NAME", "NUMBER", "STRING", "DURATION", "TRUE", "FALSE", "NULL", "LSQB"})
_OPERATOR_TOKENS = frozenset({"PLUS", "STAR", "SLASH", "PERCENT", "POW", "COMP_OP", "IN", "AND", "OR", "DOT"})
_CHAR_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' for negation, '!=' for inequality",
    "&": "use 'and'",
    "|": "use 'or'",
}


def _describe_token(token: Token) -> str:
    kind = token.type
    if kind == "$END":
        return "end of expression"
    if kind == "NAME":
        return f"name '{token}'"
    if kind in ("NUMBER", "DURATION"):
        return f"{kind.lower()} {token}"
    if kind == "STRING":
        return f"string {token}"
    return f"'{token}'"


def _describe_expected(accepts: set[str]) -> str:
    if accepts == {"NAME"}:
        return "a field name"
    if accepts == {"IN"}:
        return "'in'"
    parts: list[str] = []
    if accepts & _VALUE_TOKENS:
        parts.append("a value")
    if accepts & _OPERATOR_TOKENS:
        parts.append("an operator")
    parts.extend(f"'{sym}'" for tok, sym in (("COMMA", ","), ("RPAR", ")"), ("RSQB", "]")) if tok in accepts)
    if "$END" in accepts:
        parts.append("end of expression")
    if len(parts) <= 1:
        return parts[0] if parts else "something else"
    return f"{', '.join(parts[:-1])} or {parts[-1]}"


def _syntax_error(text: str, exc: UnexpectedInput) -> ExprError:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        accepts = set(exc.accepts or exc.expected)
        at_end = token.type == "$END"
        offset = len(text) if at_end else int(token.start_pos or 0)
        end = offset if at_end else offset + len(token)
        hint = None
        if token.type in ("COMP_OP", "IN") and "COMP_OP" not in accepts:
            message = f"unexpected '{token}' — comparisons cannot be chained"
            hint = "combine them with 'and', e.g. a < b and b < c"
        else:
            message = f"unexpected {_describe_token(token)} — expected {_describe_expected(accepts)}"
            if token.type == "NAME" and offset > 0 and text[offset - 1].isdigit():
                hint = "durations are written with a unit: 500ms, 30s, 5m, 1h, 2d"
        return ExprError(message, code="syntax", offset=offset, end_offset=end, hint=hint)
    assert isinstance(exc, UnexpectedCharacters)
    offset = cast(int, exc.pos_in_stream)  # lark declares it None on the class and sets it per error
    char = text[offset]
    if char in "\"'":
        return ExprError("unterminated string", code="syntax", offset=offset, end_offset=len(text))
    shown = char if char.isprintable() else repr(char)[1:-1]
    return ExprError(
        f"unexpected character '{shown}'", code="syntax", offset=offset, end_offset=offset + 1, hint=_CHAR_HINTS.get(char)
    )


# ---- tree -> AST ----------------------------------------------------------------------------------------------


def _span(tree: Tree[Token]) -> dict[str, int]:
    return {"start": tree.meta.start_pos, "end": tree.meta.end_pos}


def _refuse_private(token: Token) -> str:
    name = str(token)
    if name.startswith("_"):
        start = int(token.start_pos or 0)
        raise ExprError(
            f"names starting with '_' are not allowed: '{name}'", code="refused", offset=start, end_offset=start + len(name)
        )
    return name


def _number(tree: Tree[Token]) -> n.Node:
    token = tree.children[0]
    assert isinstance(token, Token)
    text = str(token)
    try:
        value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:  # pragma: no cover - an integer literal beyond Python's digit limit (needs > 4096 chars)
        value = math.inf
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ExprError(f"number too large: {text[:40]}", code="too_large", **_offsets(tree))
    return n.Literal(value, INTEGER if isinstance(value, int) else NUMBER, **_span(tree))


def _offsets(tree: Tree[Token]) -> dict[str, int]:
    return {"offset": tree.meta.start_pos, "end_offset": tree.meta.end_pos}


def _duration(tree: Tree[Token]) -> n.Node:
    text = str(tree.children[0])
    unit = text.lstrip("0123456789.")
    return n.Duration(float(text[: len(text) - len(unit)]) * _UNITS[unit], **_span(tree))


def _string(tree: Tree[Token]) -> n.Node:
    token = tree.children[0]
    assert isinstance(token, Token)
    raw = str(token)[1:-1]
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = raw[i + 1]
        where = int(token.start_pos or 0) + 1 + i
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "u" and len(raw) >= i + 6 and all(c in "0123456789abcdefABCDEF" for c in raw[i + 2 : i + 6]):
            out.append(chr(int(raw[i + 2 : i + 6], 16)))
            i += 6
        else:
            raise ExprError(
                f"invalid escape '\\{esc}' in string",
                code="syntax",
                offset=where,
                end_offset=where + 2,
                hint="valid escapes: \\\\ \\\" \\' \\n \\t \\r \\0 \\uXXXX",
            )
    return n.Literal("".join(out), STRING, **_span(tree))


def _constant(value: object) -> Callable[[Tree[Token]], n.Node]:
    kind = BOOLEAN if isinstance(value, bool) else NULL
    return lambda tree: n.Literal(value, kind, **_span(tree))


def _subtrees(tree: Tree[Token]) -> list[n.Node]:
    return [_build(child) for child in tree.children if isinstance(child, Tree)]


def _arguments(tree: Tree[Token]) -> tuple[n.Node, ...]:
    """The nodes inside an optional ``arguments`` subtree of a call or list display."""
    for child in tree.children:
        if isinstance(child, Tree) and child.data == "arguments":
            return tuple(_subtrees(child))
    return ()


def _field(tree: Tree[Token]) -> n.Node:
    names = [_refuse_private(t) for t in tree.children if isinstance(t, Token) and t.type == "NAME"]
    return n.Field(tuple(names), **_span(tree))


def _call(tree: Tree[Token]) -> n.Node:
    head = tree.children[0]
    assert isinstance(head, Token)
    return n.Call(_refuse_private(head), _arguments(tree), **_span(tree))


def _binary(tree: Tree[Token]) -> n.Node:
    left, op, right = tree.children
    assert isinstance(left, Tree) and isinstance(right, Tree)
    return n.Binary(str(op), _build(left), _build(right), **_span(tree))


def _compare(tree: Tree[Token]) -> n.Node:
    left, op, right = tree.children
    assert isinstance(left, Tree) and isinstance(right, Tree)
    return n.Compare(str(op), _build(left), _build(right), **_span(tree))


def _membership(negate: bool) -> Callable[[Tree[Token]], n.Node]:
    def build(tree: Tree[Token]) -> n.Node:
        item, container = _subtrees(tree)
        return n.In(item, container, negate, **_span(tree))

    return build


def _boolop(op: str) -> Callable[[Tree[Token]], n.Node]:
    return lambda tree: n.BoolOp(op, tuple(_subtrees(tree)), **_span(tree))


def _neg(tree: Tree[Token]) -> n.Node:
    return n.Unary("-", _subtrees(tree)[0], **_span(tree))


def _not(tree: Tree[Token]) -> n.Node:
    return n.Not(_subtrees(tree)[0], **_span(tree))


def _group(tree: Tree[Token]) -> n.Node:
    return _subtrees(tree)[0]


_BUILDERS: dict[str, Callable[[Tree[Token]], n.Node]] = {
    "number": _number,
    "duration": _duration,
    "string": _string,
    "true": _constant(True),
    "false": _constant(False),
    "null": _constant(None),
    "field": _field,
    "call": _call,
    "list_": lambda tree: n.ListLit(_arguments(tree), **_span(tree)),
    "group": _group,
    "binary": _binary,
    "neg": _neg,
    "compare": _compare,
    "in_": _membership(False),
    "not_in": _membership(True),
    "not_": _not,
    "and_": _boolop("and"),
    "or_": _boolop("or"),
}


def _build(tree: Tree[Token]) -> n.Node:
    """Lark tree -> AST node. Recursive, but only after :func:`_check_depth` bounded the depth."""
    return _BUILDERS[str(tree.data)](tree)
