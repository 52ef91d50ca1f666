"""Load workflow YAML safely into plain data plus a source position for every path.

The loader never constructs arbitrary objects and never runs PyYAML's recursive composer. It reads the parser's
event stream once, iteratively, and while doing so:

* enforces :class:`Limits` (size, nesting depth, alias uses, expanded node count, scalar length) and aborts as soon
  as one is exceeded, so hostile inputs (alias bombs, 1000-deep nesting, huge files) are refused quickly;
* refuses non-standard tags (``!!python/object``, ``!custom``, ``!!binary``, ``!!timestamp``, ``!!set`` ...),
  merge keys (``<<``), duplicate keys, complex keys and multi-document streams;
* resolves plain scalars with YAML 1.2 *core schema* rules, not PyYAML's YAML 1.1 defaults: only ``true``/``false``
  are booleans (``on``, ``off``, ``yes``, ``no`` stay strings), timestamps and ``1:30`` stay strings;
* records a :class:`Position` (1-based line and column) for every value, addressed by its YAML path
  (``("rules", 0, "when")``), so later stages can point at ``file:line:col`` -- even inside an expression string
  (:meth:`SourceDoc.expr_span`).

Every refusal is a :class:`~iot_dsl.errors.LoadError` with a stable ``code``:
``too_large``, ``not_found``, ``unreadable``, ``yaml_syntax``, ``duplicate_key``, ``unsafe_tag``, ``tag_mismatch``,
``merge_key``, ``alias_limit``, ``too_deep``, ``scalar_too_long``, ``not_a_mapping``, ``multiple_documents``,
``complex_key``.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast, overload

import yaml

from .errors import DslError, LoadError, SourceSpan

__all__ = ["Limits", "Position", "SourceDoc", "YamlPath", "load_file", "load_text"]

#: A path to a value: mapping keys are strings, sequence indexes are ints. ``()`` is the document root.
YamlPath = tuple[str | int, ...]

_E = TypeVar("_E", bound=DslError)
_T = TypeVar("_T")

_TOO_DEEP: Final = "exceeded maximum nesting depth"


class _PyLoader(yaml.SafeLoader):
    """PyYAML's pure-Python parser, refusing deep flow nesting (``[[[[...``) in the scanner.

    The scanner looks up to 1024 characters ahead for a possible ``key:`` at every open bracket, which costs
    quadratic time on a long run of brackets before the first event arrives; this stops it at the depth limit.
    """

    max_flow_level: int = 64

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's signature
        if self.flow_level >= self.max_flow_level:
            raise yaml.scanner.ScannerError(None, None, _TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


#: The parser: libyaml's (about 25x faster) when PyYAML was built with it, else the pure-Python one. Only the
#: event stream is used, never a constructor, so both are equally safe.
_LOADER: type[Any] = getattr(yaml, "CSafeLoader", None) or _PyLoader


@dataclass(frozen=True)
class Limits:
    """Caps that make hostile or accidental inputs fail fast instead of exhausting memory or the stack."""

    #: file/text size cap, in bytes (UTF-8)
    max_bytes: int = 2 * 1024 * 1024
    #: nesting of mappings/sequences (the top-level mapping is depth 1)
    max_depth: int = 64
    #: number of alias (``*ref``) uses allowed in a document
    max_aliases: int = 64
    #: total values after alias expansion (defeats "billion laughs" alias bombs)
    max_nodes: int = 200_000
    #: longest scalar, in characters
    max_scalar_len: int = 65_536


@dataclass(frozen=True)
class Position:
    """Where a value sits in the source: 1-based, ``col`` is the first character of the value's own text.

    Anchors and tags in front of a value (``&a``, ``!!str``) are not part of its text. ``end_line``/``end_col``
    point just past the value. ``style`` is the scalar style (``None`` for plain scalars and for collections,
    ``"'"``, ``'"'``, ``"|"`` or ``">"``). ``key_line``/``key_col`` locate the mapping key when the value is a
    mapping value. A value reached through an alias (``*ref``) has the position of the anchored text, except for
    the key, which is the key at the place of use.
    """

    line: int
    col: int
    end_line: int
    end_col: int
    style: str | None
    key_line: int | None = None
    key_col: int | None = None


# --------------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------------

#: Line breaks exactly as YAML (and both PyYAML parsers) count them.
_BREAK_RE: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_BREAK_CHARS: Final = "\r\n\x85\u2028\u2029"
#: Characters YAML does not allow in a stream (PyYAML's reader set, plus a byte-order mark after the start).
_NON_PRINTABLE: Final = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


class _Lines:
    """Line starts of a text, for index <-> (line, col) conversions and for source lines."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0]
        self.ends: list[int] = []
        for match in _BREAK_RE.finditer(text):
            self.ends.append(match.start())
            self.starts.append(match.end())
        self.ends.append(len(text))

    def line_text(self, line: int) -> str:
        if 1 <= line <= len(self.starts):
            return self.text[self.starts[line - 1] : self.ends[line - 1]]
        return ""

    def index(self, line: int, col: int) -> int:
        """Text index of a 1-based (line, col); clamped to the text."""
        line = min(max(line, 1), len(self.starts))
        return min(self.starts[line - 1] + max(col, 1) - 1, len(self.text))

    def where(self, index: int) -> tuple[int, int]:
        """1-based (line, col) of a text index."""
        line = bisect.bisect_right(self.starts, index)
        return line, index - self.starts[line - 1] + 1


# --------------------------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------------------------


class SourceDoc:
    """A loaded workflow file: its text, its plain data and the position of every value, by YAML path."""

    def __init__(
        self,
        file: str,
        text: str,
        data: Any,
        positions: dict[YamlPath, Position] | None = None,
        key_ends: dict[YamlPath, tuple[int, int]] | None = None,
        redirects: dict[YamlPath, YamlPath] | None = None,
    ) -> None:
        #: display name used in spans (as given by the caller)
        self.file = file
        #: the source text
        self.text = text
        #: plain Python data: dicts (insertion-ordered), lists, str, int, float, bool, None
        self.data = data
        self._positions: dict[YamlPath, Position] = positions if positions is not None else {}
        self._key_ends: dict[YamlPath, tuple[int, int]] = key_ends if key_ends is not None else {}
        #: alias uses of collections: path of the use -> path of the anchored node, whose positions serve both
        self._redirects: dict[YamlPath, YamlPath] = redirects if redirects is not None else {}
        self._line_index: _Lines | None = None

    @property
    def _lines(self) -> _Lines:
        if self._line_index is None:
            self._line_index = _Lines(self.text)
        return self._line_index

    def __repr__(self) -> str:
        return f"SourceDoc(file={self.file!r})"

    def _find(self, table: dict[YamlPath, _T], path: YamlPath) -> _T | None:
        """Look ``path`` up; below an alias use, look at the same place below the anchored node instead."""
        while True:
            found = table.get(path)
            if found is not None or not self._redirects:
                return found
            for size in range(len(path) - 1, 0, -1):
                target = self._redirects.get(path[:size])
                if target is not None:
                    path = target + path[size:]
                    break
            else:
                return None

    def position(self, path: Sequence[str | int]) -> Position | None:
        """The position of the value at exactly ``path``, or None when there is no such value."""
        return self._find(self._positions, tuple(path))

    def span(self, path: Sequence[str | int]) -> SourceSpan:
        """Span of the value at ``path``; falls back to the nearest ancestor with a position, then to 1:1."""
        full = tuple(path)
        for size in range(len(full), -1, -1):
            pos = self._find(self._positions, full[:size])
            if pos is not None:
                return SourceSpan(self.file, pos.line, pos.col, pos.end_line, pos.end_col)
        return SourceSpan(self.file, 1, 1)

    def key_span(self, path: Sequence[str | int]) -> SourceSpan:
        """Span of the mapping key of the last path element (for "unknown key" errors); else :meth:`span`."""
        full = tuple(path)
        pos = self._find(self._positions, full)
        if pos is None or pos.key_line is None or pos.key_col is None:
            return self.span(full)
        end = self._find(self._key_ends, full)
        if end is None:
            return SourceSpan(self.file, pos.key_line, pos.key_col)
        return SourceSpan(self.file, pos.key_line, pos.key_col, end[0], end[1])

    def line_text(self, line: int) -> str:
        """The 1-based source line without its line break; ``""`` when out of range."""
        return self._lines.line_text(line)

    def expr_span(self, path: Sequence[str | int], offset: int, end_offset: int | None = None) -> SourceSpan:
        """Map a 0-based character offset inside the string value at ``path`` to a file position.

        Exact for plain scalars, quoted scalars (escapes included) and literal blocks; best effort for folded text
        (folded blocks, multi-line plain scalars). ``end_offset`` (exclusive) gives the span's end. Offsets are
        clamped to the string; a non-string value or unknown path falls back to :meth:`span`.
        """
        full = tuple(path)
        pos = self._find(self._positions, full)
        value = self._value_at(full)
        if pos is None or not isinstance(value, str):
            return self.span(full)
        chars, tail = self._char_map(pos, value)
        size = len(value)
        offset = min(max(offset, 0), size)
        start = chars[offset][0] if offset < size else tail
        line, col = self._lines.where(start)
        if end_offset is None:
            return SourceSpan(self.file, line, col)
        end_offset = min(end_offset, size)
        if end_offset > offset:
            end = chars[end_offset - 1][1]
        else:
            end = start + 1
        end_line, end_col = self._lines.where(end)
        return SourceSpan(self.file, line, col, end_line, end_col)

    @overload
    def error(
        self, message: str, path: Sequence[str | int], *, code: str, hint: str | None = None, key: bool = False
    ) -> LoadError: ...

    @overload
    def error(
        self,
        message: str,
        path: Sequence[str | int],
        *,
        code: str,
        hint: str | None = None,
        key: bool = False,
        cls: type[_E],
    ) -> _E: ...

    def error(
        self,
        message: str,
        path: Sequence[str | int],
        *,
        code: str,
        hint: str | None = None,
        key: bool = False,
        cls: type[DslError] = LoadError,
    ) -> DslError:
        """Build (not raise) an error of class ``cls`` positioned at the value (or, with ``key``, its key)."""
        full = tuple(path)
        span = self.key_span(full) if key else self.span(full)
        return cls(message, span=span, path=full, code=code, hint=hint, source_line=self.line_text(span.line))

    # -- internals ------------------------------------------------------------------------------------------

    def _value_at(self, path: YamlPath) -> Any:
        node: Any = self.data
        for part in path:
            if isinstance(part, str) and isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
            else:
                return None
        return node

    def _char_map(self, pos: Position, value: str) -> tuple[list[tuple[int, int]], int]:
        """For each character of ``value``: its (start, end) text index; plus the index just past the value."""
        start = self._lines.index(pos.line, pos.col)
        if pos.style in ("'", '"'):
            mapped = _quoted_char_map(self.text, start, pos.style, value)
            if mapped is not None:
                return mapped
            # Best effort: one source character per value character, after the opening quote.
            limit = len(self.text)
            chars = [(min(start + 1 + i, limit), min(start + 2 + i, limit)) for i in range(len(value))]
            return chars, min(start + 1 + len(value), limit)
        if pos.style in ("|", ">"):
            first_line = pos.line + 1
            begin = self._lines.index(first_line, 1) if first_line <= len(self._lines.starts) else len(self.text)
        else:
            first_line, begin = pos.line, start
        end = self._lines.index(pos.end_line, pos.end_col)
        block = pos.style is not None
        indent: int | None = None
        segments: list[tuple[int, int, int]] = []
        for line in range(first_line, pos.end_line + 1):
            line_start = self._lines.starts[line - 1]
            seg_start = begin if line == first_line else line_start
            seg_end = min(self._lines.ends[line - 1], end) if line == pos.end_line else self._lines.ends[line - 1]
            while seg_start < seg_end and self.text[seg_start] in " \t":
                seg_start += 1
            if not block:
                while seg_end > seg_start and self.text[seg_end - 1] in " \t":
                    seg_end -= 1
            if seg_start < seg_end:
                # In a block scalar, spaces beyond the block's indentation are content (more-indented lines).
                if block and indent is None:
                    indent = seg_start - line_start
                extra = seg_start - line_start - indent if block and indent is not None else 0
                segments.append((seg_start, seg_end, extra))
        return _align(self.text, segments, value, begin)


def _align(
    text: str, segments: Iterable[tuple[int, int, int]], value: str, begin: int
) -> tuple[list[tuple[int, int]], int]:
    """Align source line pieces with the (folded) value: each piece's text appears verbatim, in order.

    A segment is (start, end, extra): its text index range and how many spaces before it may be content. Value
    characters between pieces (folded line breaks) map, zero-width, to the end of the previous piece.
    """
    chars: list[tuple[int, int]] = []
    cursor = 0
    prev_end = begin
    for seg_start, seg_end, extra in segments:
        piece = text[seg_start:seg_end]
        found = value.find(piece, cursor)
        if found < 0:
            break
        lead = 0
        while lead < extra and found - lead > cursor and value[found - lead - 1] == text[seg_start - lead - 1]:
            lead += 1
        chars.extend((prev_end, prev_end) for _ in range(cursor, found - lead))
        chars.extend((i, i + 1) for i in range(seg_start - lead, seg_end))
        cursor = found + len(piece)
        prev_end = seg_end
    chars.extend((prev_end, prev_end) for _ in range(cursor, len(value)))
    return chars, prev_end


_ESCAPES: Final = {
    "0": "\0", "a": "\x07", "b": "\x08", "t": "\t", "\t": "\t", "n": "\n", "v": "\x0b", "f": "\x0c", "r": "\r",
    "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029",
}  # fmt: skip
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}


def _skip_breaks(text: str, i: int) -> tuple[int, list[int]]:
    """From a line break at ``i``: skip it and any whitespace-only lines; return the index after and break starts."""
    breaks: list[int] = []
    size = len(text)
    while i < size and text[i] in _BREAK_CHARS:
        breaks.append(i)
        i += 2 if text.startswith("\r\n", i) else 1
        while i < size and text[i] in " \t":
            i += 1
    return i, breaks


def _quoted_char_map(text: str, start: int, quote: str, value: str) -> tuple[list[tuple[int, int]], int] | None:
    """Decode the quoted scalar at ``start`` the way YAML does, keeping each character's source range.

    Returns None when the decoding does not reproduce ``value`` (then the caller falls back to an estimate).
    """
    if not text.startswith(quote, start):
        return None
    out: list[str] = []
    chars: list[tuple[int, int]] = []
    i = start + 1
    size = len(text)
    while i < size:
        ch = text[i]
        if ch == quote:
            if quote == "'" and text.startswith("''", i):
                out.append("'")
                chars.append((i, i + 2))
                i += 2
                continue
            break
        if quote == '"' and ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt and nxt in _BREAK_CHARS:  # escaped line break: joins lines, keeps further empty lines
                i, breaks = _skip_breaks(text, i + 1)
                for at in breaks[1:]:
                    out.append("\n")
                    chars.append((at, at))
            elif nxt in _HEX_ESCAPES:
                width = 2 + _HEX_ESCAPES[nxt]
                try:
                    out.append(chr(int(text[i + 2 : i + width], 16)))
                except ValueError:
                    return None
                chars.append((i, i + width))
                i += width
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                chars.append((i, i + 2))
                i += 2
            else:
                return None
            continue
        if ch in " \t" or ch in _BREAK_CHARS:
            j = i
            while j < size and text[j] in " \t":
                j += 1
            if j < size and text[j] in _BREAK_CHARS:  # line folding
                i, breaks = _skip_breaks(text, j)
                if len(breaks) == 1:
                    out.append(" ")
                    chars.append((breaks[0], breaks[0]))
                for at in breaks[1:]:
                    out.append("\n")
                    chars.append((at, at))
                continue
            out.extend(text[i:j])
            chars.extend((k, k + 1) for k in range(i, j))
            i = j
            continue
        out.append(ch)
        chars.append((i, i + 1))
        i += 1
    if "".join(out) != value:
        return None
    return chars, i


# --------------------------------------------------------------------------------------------------------------
# Scalar resolution: YAML 1.2 core schema
# --------------------------------------------------------------------------------------------------------------

_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG_PREFIX + n for n in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = (_TAG_PREFIX + n for n in ("seq", "map", "merge"))
_SCALAR_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})

_NULL_RE: Final = re.compile(r"(?:null|Null|NULL|~)?\Z")
_BOOL_VALUES: Final = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_DEC_RE: Final = re.compile(r"[-+]?[0-9]+\Z")
_INT_OCT_RE: Final = re.compile(r"0o[0-7]+\Z")
_INT_HEX_RE: Final = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT_RE: Final = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_INF_RE: Final = re.compile(r"([-+]?)\.(?:inf|Inf|INF)\Z")
_NAN_RE: Final = re.compile(r"\.(?:nan|NaN|NAN)\Z")
#: Python refuses to convert longer decimal strings (CVE-2020-10735 guard); YAML ints that long are refused too.
_MAX_INT_DIGITS: Final = 4300

_MISSING: Final = object()
#: the first characters of every core-schema null, bool, int and float (anything else is a string)
_NON_STR_STARTS: Final = frozenset("0123456789+-.~nNtTfF")


class _IntTooLong(ValueError):
    """A decimal integer with more digits than Python converts."""


def _core_int(text: str) -> Any:
    if _INT_DEC_RE.match(text):
        if len(text) > _MAX_INT_DIGITS:
            raise _IntTooLong(text)
        return int(text)
    if _INT_OCT_RE.match(text):
        return int(text[2:], 8)
    if _INT_HEX_RE.match(text):
        return int(text[2:], 16)
    return _MISSING


def _core_float(text: str) -> Any:
    if _FLOAT_RE.match(text):
        return float(text)
    inf = _INF_RE.match(text)
    if inf:
        return float(f"{inf.group(1)}inf")
    if _NAN_RE.match(text):
        return float("nan")
    return _MISSING


def _core_plain(text: str) -> Any:
    """Resolve a plain (unquoted, untagged) scalar by YAML 1.2 core schema rules."""
    if text and text[0] not in _NON_STR_STARTS:
        return text
    if _NULL_RE.match(text):
        return None
    if text in _BOOL_VALUES:
        return _BOOL_VALUES[text]
    number = _core_int(text)
    if number is _MISSING:
        number = _core_float(text)
    return text if number is _MISSING else number


def _explicit(tag: str, text: str) -> Any:
    """Convert a scalar carrying an explicit standard tag (``!!int 12``); ``_MISSING`` when it cannot be."""
    if tag == _STR:
        return text
    if tag == _NULL:
        return None if _NULL_RE.match(text) else _MISSING
    if tag == _BOOL:
        return _BOOL_VALUES.get(text, _MISSING)
    if tag == _INT:
        return _core_int(text)
    number = _core_int(text)  # _FLOAT: ints are floats too
    return _core_float(text) if number is _MISSING else float(number)


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG_PREFIX) :] if tag.startswith(_TAG_PREFIX) else tag


# --------------------------------------------------------------------------------------------------------------
# The event-driven builder
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A completed anchored node, ready to be reused by ``*alias``."""

    data: Any
    path: YamlPath
    position: Position
    #: values in the node, aliases expanded (what one more use adds to the document)
    nodes: int
    #: nesting levels the node adds (0 for a scalar)
    height: int
    #: the scalar's text when the node may serve as a mapping key, else None
    key_text: str | None


@dataclass(eq=False, slots=True)
class _Frame:
    """An open mapping or sequence."""

    container: dict[str, Any] | list[Any]
    is_map: bool
    path: YamlPath
    line: int
    col: int
    key_pos: tuple[int, int] | None
    anchor: str | None
    flow: bool
    nodes_before: int
    last_end: tuple[int, int]
    height: int = 1
    #: mapping state: the key waiting for its value, where it is, and the line of every key seen
    key: str | None = None
    key_start: tuple[int, int] = (0, 0)
    key_end: tuple[int, int] = (0, 0)
    key_lines: dict[str, int] = field(default_factory=dict)


_NODE_EVENTS: Final = (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.AliasEvent)
_END_EVENTS: Final = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Builder:
    """Consumes parser events; builds data and positions; enforces every limit while it goes.

    An alias costs O(1) while loading: its node count and height are known from its anchor, its positions are a
    redirect to the anchor's path, and its data is copied only once the whole document has passed every check.
    """

    def __init__(self, text: str, file: str, lines: _Lines, limits: Limits) -> None:
        self.text = text
        self.file = file
        self.lines = lines
        self.limits = limits
        self.stack: list[_Frame] = []
        self.positions: dict[YamlPath, Position] = {}
        self.key_ends: dict[YamlPath, tuple[int, int]] = {}
        self.redirects: dict[YamlPath, YamlPath] = {}
        self.copies: list[tuple[dict[str, Any] | list[Any], str | int, Any]] = []
        #: anchors by name; an open collection is its own frame until it closes (aliasing it would recurse)
        self.anchors: dict[str, _Anchor | _Frame] = {}
        self.nodes = 0
        self.aliases = 0
        self.documents = 0
        self.root: Any = _MISSING

    # -- errors and marks -------------------------------------------------------------------------------------

    def fail(
        self,
        code: str,
        message: str,
        at: tuple[int, int],
        path: Sequence[str | int] = (),
        *,
        end: tuple[int, int] | None = None,
        hint: str | None = None,
    ) -> LoadError:
        span = SourceSpan(self.file, at[0], at[1], end[0] if end else None, end[1] if end else None)
        return LoadError(message, span=span, path=path, code=code, hint=hint, source_line=self.lines.line_text(at[0]))

    @staticmethod
    def mark(mark: Any) -> tuple[int, int]:
        return mark.line + 1, mark.column + 1

    def content_start(self, event: Any, clamp: bool) -> tuple[int, int]:
        """Where the node's own text starts: after any anchor/tag properties (and the space or comments after)."""
        start = self.mark(event.start_mark)
        if event.anchor is None and getattr(event, "tag", None) is None:
            return start
        text, size = self.text, len(self.text)
        i = self.lines.index(*start)
        while i < size:
            if text[i] in "&!":
                while i < size and text[i] not in " \t,[]{}" and text[i] not in _BREAK_CHARS:
                    i += 1
            elif text[i] in " \t" or text[i] in _BREAK_CHARS:
                i += 1
            elif text[i] == "#":
                while i < size and text[i] not in _BREAK_CHARS:
                    i += 1
            else:
                break
        if clamp:
            i = min(i, self.lines.index(*self.mark(event.end_mark)))
        return self.lines.where(i)

    # -- the event loop --------------------------------------------------------------------------------------

    def run(self, events: Iterator[Any]) -> SourceDoc:
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise self.fail(
                        "multiple_documents",
                        "a workflow file must hold a single YAML document, found a second one",
                        self.mark(event.start_mark),
                        hint="remove the extra '---' document or split it into its own file",
                    )
            elif isinstance(event, _NODE_EVENTS):
                self.node(event)
            elif isinstance(event, _END_EVENTS):
                self.close(event)
        if self.root is _MISSING:
            raise self.fail(
                "not_a_mapping", "a workflow file must be a mapping at the top level", (1, 1), hint="the file is empty"
            )
        # Every check passed: give each alias use its own copy (in order, so nested aliases are copied first).
        for container, slot, data in self.copies:
            container[slot] = _clone(data)  # type: ignore[index]
        doc = SourceDoc(self.file, self.text, self.root, self.positions, self.key_ends, self.redirects)
        doc._line_index = self.lines  # already built for the error messages
        return doc

    def node(self, event: Any) -> None:
        parent = self.stack[-1] if self.stack else None
        where = self.mark(event.start_mark)
        is_key = parent is not None and parent.is_map and parent.key is None
        if parent is None or is_key:
            path = parent.path if parent is not None else ()
        elif parent.is_map:
            path = (*parent.path, cast(str, parent.key))
        else:
            path = (*parent.path, len(parent.container))
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > self.limits.max_scalar_len:
            raise self.fail(
                "scalar_too_long",
                f"scalar is {len(event.value)} characters long, more than the limit of {self.limits.max_scalar_len}",
                where,
                path,
            )
        self.check_tag(event, where, path)
        if parent is None:
            if not isinstance(event, yaml.MappingStartEvent):
                empty = isinstance(event, yaml.ScalarEvent) and event.value == "" and not event.style
                kinds = {yaml.ScalarEvent: "a scalar", yaml.SequenceStartEvent: "a sequence"}
                found = kinds.get(type(event), "an alias")
                raise self.fail(
                    "not_a_mapping",
                    "a workflow file must be a mapping at the top level",
                    where,
                    hint="the file is empty" if empty else f"found {found}",
                )
            self.open(event, None, ())
        elif is_key:
            self.key(event, parent, where)
        elif isinstance(event, yaml.CollectionStartEvent):
            self.open(event, parent, path)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event, parent, path, where)
        else:
            self.scalar(event, parent, path)

    def check_tag(self, event: Any, where: tuple[int, int], path: YamlPath) -> None:
        tag = getattr(event, "tag", None)
        if tag is None or tag == "!":
            return
        if tag == _MERGE:
            raise self.fail("merge_key", "merge keys ('<<', !!merge) are not allowed", where, path, hint=_MERGE_HINT)
        is_scalar = isinstance(event, yaml.ScalarEvent)
        expected = _SCALAR_TAGS if is_scalar else {_MAP if isinstance(event, yaml.MappingStartEvent) else _SEQ}
        if tag in expected:
            return
        if tag in _SCALAR_TAGS or tag in (_MAP, _SEQ):
            kind = "a scalar" if is_scalar else "a collection"
            raise self.fail("tag_mismatch", f"tag '{_show_tag(tag)}' cannot be used on {kind}", where, path)
        raise self.fail(
            "unsafe_tag",
            f"tag '{_show_tag(tag)}' is not allowed",
            where,
            path,
            hint="only the standard !!str, !!int, !!float, !!bool, !!null, !!seq and !!map tags may be used",
        )

    def scalar_value(self, event: Any, where: tuple[int, int], path: YamlPath) -> Any:
        tag, text = event.tag, event.value
        try:
            if tag is None and not event.style:
                return _core_plain(text)
            if tag is None or tag == "!":
                return text
            value = _explicit(tag, text)
        except _IntTooLong:
            raise self.fail(
                "scalar_too_long",
                f"integer has {len(text)} digits, more than the limit of {_MAX_INT_DIGITS}",
                where,
                path,
                hint="quote it to keep it as text",
            ) from None
        if value is _MISSING:
            raise self.fail("tag_mismatch", f"'{text}' cannot be read as {_show_tag(tag)}", where, path)
        return value

    def count(self, amount: int, where: tuple[int, int], path: YamlPath, alias: bool) -> None:
        self.nodes += amount
        if self.nodes > self.limits.max_nodes:
            if alias:
                raise self.fail(
                    "alias_limit",
                    f"alias expansion exceeds the limit of {self.limits.max_nodes} values",
                    where,
                    path,
                    hint="this looks like an alias bomb ('billion laughs'); write the values out",
                )
            raise self.fail("too_large", f"document has more than {self.limits.max_nodes} values", where, path)

    def attach(self, parent: _Frame, value: Any, end: tuple[int, int], height: int) -> str | int:
        """Put a value in its parent; return the key or index it went to."""
        slot: str | int
        if isinstance(parent.container, dict):
            slot = cast(str, parent.key)
            parent.container[slot] = value
            parent.key = None
        else:
            slot = len(parent.container)
            parent.container.append(value)
        parent.last_end = end
        parent.height = max(parent.height, height + 1)
        return slot

    def record(
        self, path: YamlPath, start: tuple[int, int], end: tuple[int, int], style: str | None, parent: _Frame | None
    ) -> Position:
        """Store a value's position, with its key's position when it is a mapping value."""
        if parent is not None and parent.is_map:
            pos = Position(start[0], start[1], end[0], end[1], style, parent.key_start[0], parent.key_start[1])
            self.key_ends[path] = parent.key_end
        else:
            pos = Position(start[0], start[1], end[0], end[1], style)
        self.positions[path] = pos
        return pos

    def key(self, event: Any, parent: _Frame, where: tuple[int, int]) -> None:
        if isinstance(event, yaml.CollectionStartEvent):
            kind = "mapping" if isinstance(event, yaml.MappingStartEvent) else "sequence"
            raise self.fail("complex_key", f"a mapping key must be a scalar, not a {kind}", where, parent.path)
        end = self.mark(event.end_mark)
        if isinstance(event, yaml.AliasEvent):
            anchor = self.use_alias(event, where, parent.path)
            if anchor.key_text is None:
                raise self.fail(
                    "complex_key", "a mapping key must be a scalar, not an alias to a collection", where, parent.path
                )
            text, start = anchor.key_text, where
        else:
            value = self.scalar_value(event, where, parent.path)  # validates explicit tags
            if event.value == "<<" and not event.style and event.tag is None:
                raise self.fail("merge_key", "merge keys ('<<') are not allowed", where, parent.path, hint=_MERGE_HINT)
            text, start = event.value, self.content_start(event, clamp=True)
            if event.anchor is not None:
                own = Position(start[0], start[1], end[0], end[1], event.style or None)
                self.anchors[event.anchor] = _Anchor(value, (), own, 1, 0, text)
        first = parent.key_lines.get(text)
        if first is not None:
            raise self.fail(
                "duplicate_key",
                f"duplicate key '{text}' (first defined at line {first})",
                start,
                (*parent.path, text),
                end=end,
            )
        parent.key_lines[text] = start[0]
        parent.key, parent.key_start, parent.key_end = text, start, end
        parent.last_end = end

    def scalar(self, event: Any, parent: _Frame, path: YamlPath) -> None:
        where = self.content_start(event, clamp=True)
        value = self.scalar_value(event, where, path)
        self.count(1, where, path, alias=False)
        end = self.mark(event.end_mark)
        pos = self.record(path, where, end, event.style or None, parent)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, path, pos, 1, 0, event.value)
        self.attach(parent, value, end, 0)

    def open(self, event: Any, parent: _Frame | None, path: YamlPath) -> None:
        where = self.content_start(event, clamp=False)
        if len(self.stack) + 1 > self.limits.max_depth:
            raise self.fail(
                "too_deep",
                f"nesting is deeper than the limit of {self.limits.max_depth} levels",
                where,
                path,
                hint="flatten the structure",
            )
        self.count(1, where, path, alias=False)
        is_map = isinstance(event, yaml.MappingStartEvent)
        container: dict[str, Any] | list[Any] = {} if is_map else []
        key_pos = parent.key_start if parent is not None and parent.is_map else None
        self.record(path, where, where, None, parent)  # keeps document order; completed when the collection closes
        if parent is None:
            self.root = container
        else:
            self.attach(parent, container, where, 0)
        flow = bool(event.flow_style)
        frame = _Frame(container, is_map, path, *where, key_pos, event.anchor, flow, self.nodes - 1, where)
        self.stack.append(frame)
        if event.anchor is not None:
            self.anchors[event.anchor] = frame

    def close(self, event: Any) -> None:
        frame = self.stack.pop()
        end = self.mark(event.end_mark) if frame.flow else frame.last_end
        key_line, key_col = frame.key_pos if frame.key_pos else (None, None)
        pos = Position(frame.line, frame.col, end[0], end[1], None, key_line, key_col)
        self.positions[frame.path] = pos
        if frame.anchor is not None and self.anchors[frame.anchor] is frame:  # not redefined inside itself
            nodes = self.nodes - frame.nodes_before
            self.anchors[frame.anchor] = _Anchor(frame.container, frame.path, pos, nodes, frame.height, None)
        if self.stack:
            parent = self.stack[-1]
            parent.last_end = end
            parent.height = max(parent.height, frame.height + 1)

    def use_alias(self, event: Any, where: tuple[int, int], path: YamlPath) -> _Anchor:
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            raise self.fail(
                "alias_limit",
                f"more than {self.limits.max_aliases} alias uses (*name) in one document",
                where,
                path,
                hint="this looks like an alias bomb ('billion laughs'); write the values out",
            )
        name = event.anchor
        anchor = self.anchors.get(name)
        if anchor is None:
            message = f"alias '*{name}' refers to no anchor '&{name}' defined before it"
            raise self.fail("yaml_syntax", message, where, path)
        if isinstance(anchor, _Frame):
            raise self.fail(
                "yaml_syntax", f"alias '*{name}' refers to a node that contains it (recursive data)", where, path
            )
        return anchor

    def alias(self, event: Any, parent: _Frame, path: YamlPath, where: tuple[int, int]) -> None:
        anchor = self.use_alias(event, where, path)
        if len(self.stack) + anchor.height > self.limits.max_depth:
            raise self.fail(
                "too_deep",
                f"alias '*{event.anchor}' nests values deeper than the limit of {self.limits.max_depth} levels",
                where,
                path,
            )
        self.count(anchor.nodes, where, path, alias=True)
        pos = anchor.position
        self.record(path, (pos.line, pos.col), (pos.end_line, pos.end_col), pos.style, parent)
        slot = self.attach(parent, anchor.data, self.mark(event.end_mark), anchor.height)
        if anchor.height:  # a collection: positions below it are the anchor's, the data gets its own copy
            self.redirects[path] = anchor.path
            self.copies.append((parent.container, slot, anchor.data))


_MERGE_HINT: Final = "merge keys hide duplicate and overridden keys; write the keys out"


def _clone(value: Any) -> Any:
    """Copy nested dicts/lists without recursion."""
    root: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
    todo: list[tuple[Any, Any]] = [(value, root)]
    while todo:
        src, dst = todo.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, item in items:
            copy = ({} if isinstance(item, dict) else []) if isinstance(item, dict | list) else item
            if isinstance(dst, dict):
                dst[key] = copy
            else:
                dst.append(copy)
            if copy is not item:
                todo.append((item, copy))
    return root


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------


def load_text(text: str, file: str = "<string>", limits: Limits = Limits()) -> SourceDoc:
    """Load workflow YAML from a string; ``file`` is the name shown in error spans.

    Raises :class:`~iot_dsl.errors.LoadError` for every refusal listed in the module docstring.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise LoadError(f"{file} is {size} bytes, larger than the limit of {limits.max_bytes} bytes", code="too_large")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _Lines(text)
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line, col = lines.where(bad.start())
        raise LoadError(
            f"character U+{ord(bad.group()):04X} is not allowed in YAML text",
            span=SourceSpan(file, line, col, line, col + 1),
            code="unreadable",
            hint="remove the control character",
            source_line=lines.line_text(line),
        )
    events = _events(text, limits)
    try:
        return _Builder(text, file, lines, limits).run(events)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, file, lines, limits) from None
    finally:
        events.close()  # stops the parser at once when a limit was hit


def _events(text: str, limits: Limits) -> Generator[Any, None, None]:
    """The parser's events, one at a time (what ``yaml.parse`` does, with a parser chosen here)."""
    parser = _LOADER(text)
    parser.max_flow_level = limits.max_depth
    try:
        while parser.check_event():
            yield parser.get_event()
    finally:
        parser.dispose()


def _syntax_error(exc: yaml.YAMLError, file: str, lines: _Lines, limits: Limits) -> LoadError:
    """A parser error as a LoadError, with PyYAML's 0-based problem mark turned into a 1-based span."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return LoadError(f"invalid YAML: {exc}", code="yaml_syntax")
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    code, message, hint = "yaml_syntax", f"invalid YAML: {problem}", None
    if problem == _TOO_DEEP:  # our scanner guard, or libyaml's own (1000 levels, hit while looking ahead)
        code, message = "too_deep", f"nesting is deeper than the limit of {limits.max_depth} levels"
        hint = "flatten the structure"
    elif exc.context and exc.problem and exc.context_mark is not None:
        hint = f"{exc.context} at line {exc.context_mark.line + 1}"
    if mark is None:
        return LoadError(message, code=code, hint=hint)
    line, col = mark.line + 1, mark.column + 1
    return LoadError(
        message, span=SourceSpan(file, line, col), code=code, hint=hint, source_line=lines.line_text(line)
    )


def load_file(
    path: str | os.PathLike[str], limits: Limits = Limits(), display_name: str | None = None
) -> SourceDoc:
    """Load a workflow YAML file (UTF-8, an optional BOM is ignored). The size is checked before reading.

    ``display_name`` (default: the path as given) is the name shown in error spans.
    """
    name = display_name if display_name is not None else os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise LoadError(f"file not found: {name}", code="not_found") from None
    except OSError as exc:
        raise LoadError(f"cannot read {name}: {exc.strerror or exc}", code="unreadable") from None
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(f"cannot read {name}: not a regular file", code="unreadable")
    if info.st_size > limits.max_bytes:
        raise LoadError(
            f"{name} is {info.st_size} bytes, larger than the limit of {limits.max_bytes} bytes", code="too_large"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise LoadError(f"cannot read {name}: {exc.strerror or exc}", code="unreadable") from None
    if len(raw) > limits.max_bytes:  # the file grew after stat, or reports no size
        raise LoadError(f"{name} is larger than the limit of {limits.max_bytes} bytes", code="too_large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8-sig")
        lines = _Lines(good)
        line, col = lines.where(len(good))
        whole = _Lines(raw.decode("utf-8-sig", "replace"))
        raise LoadError(
            f"{name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            span=SourceSpan(name, line, col),
            code="unreadable",
            hint="save the file as UTF-8",
            source_line=whole.line_text(line),
        ) from None
    return load_text(text, name, limits)
