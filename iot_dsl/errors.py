"""Error values for every stage: a span in the workflow file, a YAML path, a code and an actionable message.

Every error the compiler raises is a :class:`DslError` (or a :class:`DslErrors` collection of them). Each carries
fields a program can act on (``code``, ``span``, ``path``, ``hint``) and renders for people as::

    plant.yaml:12:5: unknown key 'whn' (did you mean 'when'?)
      at rules[0].whn
       12 |   - whn: overheat
          |     ^
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "SourceSpan",
    "DslError",
    "DslErrors",
    "LoadError",
    "SchemaError",
    "ExprError",
    "CompileError",
    "PlanError",
    "RuntimeDslError",
    "did_you_mean",
    "format_path",
]


@dataclass(frozen=True, order=True)
class SourceSpan:
    """A position in a source file: 1-based line and column (``end_*`` optional, inclusive line, exclusive col)."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """Render a YAML path as authors write it: ``("rules", 2, "do", 0, "targets")`` -> ``rules[2].do[0].targets``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """Return the candidate closest to ``word`` (a likely misspelling), or None when nothing is close."""
    pool = sorted({c for c in candidates if isinstance(c, str)})
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    return matches[0] if matches else None


class DslError(Exception):
    """One positioned error. ``code`` is stable (tests and tools match on it); ``message`` is for people."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        span: SourceSpan | None = None,
        path: Sequence[PathPart] | None = None,
        code: str | None = None,
        hint: str | None = None,
        source_line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.path: tuple[PathPart, ...] = tuple(path) if path is not None else ()
        if code is not None:
            self.code = code
        self.hint = hint
        self.source_line = source_line

    @property
    def path_text(self) -> str:
        """The YAML path as text (``rules[2].do[0].targets``), or ``""``."""
        return format_path(self.path)

    def headline(self) -> str:
        """``file:line:col: message`` (or just the message when there is no span)."""
        text = self.message if self.hint is None else f"{self.message} ({self.hint})"
        return f"{self.span}: {text}" if self.span else text

    def render(self) -> str:
        """The full human rendering: headline, YAML path, source line and caret."""
        lines = [self.headline()]
        if self.path:
            lines.append(f"  at {self.path_text}")
        if self.span is not None and self.source_line is not None:
            number = str(self.span.line)
            gutter = " " * len(number)
            src = self.source_line.rstrip("\n").expandtabs(1)
            width = 1
            if self.span.end_line == self.span.line and self.span.end_col and self.span.end_col > self.span.col:
                width = self.span.end_col - self.span.col
            lines.append(f"  {number} | {src}")
            lines.append(f"  {gutter} | {' ' * (self.span.col - 1)}{'^' * width}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order errors by file position, then message, so reports are stable."""
        if self.span is None:
            return ("", 0, 0, self.message)
        return (self.span.file, self.span.line, self.span.col, self.message)


class DslErrors(DslError):
    """Several errors reported together (validation never stops at the first one)."""

    code = "errors"

    def __init__(self, errors: Sequence[DslError]) -> None:
        ordered = sorted(errors, key=lambda e: e.sort_key())
        self.errors: list[DslError] = ordered
        count = len(ordered)
        super().__init__(f"{count} error{'s' if count != 1 else ''}")

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class LoadError(DslError):
    """The YAML file itself is refused: unreadable, too large, too deep, unsafe tag, alias bomb, duplicate key."""

    code = "load"


class SchemaError(DslError):
    """The document does not match the workflow language's JSON Schema."""

    code = "schema"


class ExprError(DslError):
    """An expression does not parse, does not type-check, or is refused (unsafe, too large)."""

    code = "expr"

    def __init__(self, message: str, *, offset: int = 0, end_offset: int | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        #: character offset of the problem inside the expression text (0-based)
        self.offset = offset
        self.end_offset = end_offset


class CompileError(DslError):
    """The workflow is well-formed but inconsistent: unknown names, cycles, impossible placement."""

    code = "compile"


class PlanError(DslError):
    """A plan document is malformed or of an unsupported version."""

    code = "plan"


class RuntimeDslError(DslError):
    """The engine was used wrongly (unknown segment, closed engine); never raised for bad events."""

    code = "runtime"
