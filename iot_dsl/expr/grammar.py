"""Locate ``expr.lark`` and build the (cached) LALR parser for the expression language.

The grammar lives in the repository's top-level ``grammar/`` folder; a wheel build copies that folder into the
package as ``iot_dsl/grammar/`` (pyproject ``force-include``). :func:`grammar_path` looks in the package first,
then next to the package (a source checkout).
"""

from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark

import iot_dsl

__all__ = ["GRAMMAR_FILE", "grammar_path", "get_parser"]

GRAMMAR_FILE = "expr.lark"


def grammar_path() -> Path:
    """Return the path of ``expr.lark``: ``<package>/grammar/`` (installed wheel) or ``<package>/../grammar/``.

    Raises ``FileNotFoundError`` naming both places when neither holds the file.
    """
    package_dir = Path(iot_dsl.__file__).resolve().parent
    candidates = (package_dir / "grammar" / GRAMMAR_FILE, package_dir.parent / "grammar" / GRAMMAR_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"expression grammar {GRAMMAR_FILE!r} not found (looked in: {searched})")


@functools.lru_cache(maxsize=1)
def get_parser() -> Lark:
    """The expression parser, built once: LALR, basic lexer, positions propagated, no ``[x]`` placeholders."""
    text = grammar_path().read_text(encoding="utf-8")
    return Lark(
        text,
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=False,
        start="start",
    )
