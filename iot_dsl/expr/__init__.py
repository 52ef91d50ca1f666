"""The expression language: text -> AST (with spans) -> checked type -> Python closure or numpy kernel.

Typical use::

    from iot_dsl.expr import Scope, NUMBER, compile_condition
    hot = compile_condition("temp > 90", Scope(fields={"temp": NUMBER}))
    hot({"temp": 95})   # True

Every failure is an :class:`~iot_dsl.errors.ExprError` with a stable ``code`` and an ``offset`` into the text:
parse (``syntax``, ``too_long``, ``too_deep``, ``refused``, ``too_large``), check (``unknown_field``,
``unknown_function``, ``arity``, ``type``, ``refused``, ``too_large``, ``bad_version``), compile
(``not_vectorizable``) and run time (``missing_field``, ``runtime_type``, ``overflow``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import types
from .check import annotate, check_expr
from .compile import compile_expr, compile_vector
from .functions import FUNCTIONS, FunctionSpec, register
from .nodes import Node, field_paths
from .parser import parse_expr
from .types import (
    ANY,
    BOOLEAN,
    DURATION,
    INTEGER,
    LIST,
    NULL,
    NUMBER,
    STRING,
    TYPE_NAMES,
    VERSION,
    Namespace,
    Scope,
    Type,
    assignable,
    is_assignable,
    join,
    list_of,
    type_from_name,
    type_name,
)
from .version import Version

__all__ = [
    "parse_expr",
    "check_expr",
    "annotate",
    "compile_expr",
    "compile_vector",
    "compile_condition",
    "Scope",
    "Namespace",
    "Type",
    "types",
    "NUMBER",
    "INTEGER",
    "STRING",
    "BOOLEAN",
    "DURATION",
    "VERSION",
    "ANY",
    "NULL",
    "LIST",
    "TYPE_NAMES",
    "list_of",
    "assignable",
    "is_assignable",
    "join",
    "type_from_name",
    "type_name",
    "Version",
    "FUNCTIONS",
    "FunctionSpec",
    "register",
    "Node",
    "field_paths",
]


def compile_condition(text: str, scope: Scope) -> Callable[[Any], bool]:
    """Parse ``text``, check it as a boolean condition over ``scope`` and return ``row -> True/False``."""
    return compile_expr(parse_expr(text), scope, expect=BOOLEAN, text=text)
