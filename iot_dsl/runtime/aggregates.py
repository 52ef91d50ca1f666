"""The aggregate operator: batches of stream events in, ``aggregate`` records (and events) per closed window out.

Readings are appended to a columnar buffer (numpy arrays: event time, device index, one array per statistic
argument, and one slot array per group level, filled in when the rows are first read by level or just before the
membership moves a device) as they arrive. When the source watermark passes a window's end, the
operator closes every due window at once: it assigns the buffered rows to (window, group) segments for each
level (see :mod:`.windows` and :mod:`.groups`) and computes all statistics with :mod:`.telemetry_stats` -- no
per-event Python in the maths. Each closed window yields an ``aggregate`` record with ``revision`` 0.

Tumbling windows whose statistics need no event times (count, sum, mean, min, max, var/std, percentiles) are
also kept as dense blocks (:class:`.windows.DenseWindows`: one column per device, its readings in arrival order)
filled as readings arrive; closing such a window copies each block device by device, reduces the copy along
axis 1 for the devices and combines the device rows per group (:func:`.telemetry_stats.block_stats`,
:func:`.telemetry_stats.rollup_stats`), without sorting the buffered rows (percentiles sort each device's row of
the copy in place; the copy, sort and per-device reductions run a part of the devices per thread, see
:mod:`.row_parts`), and builds the records in key order. A closed block's memory is refilled by the next
window's. The row buffer stays the reference: windows revised by late data, windows whose devices changed group
while open and windows a single busy device would make too sparse close from it.

Late data: a reading whose windows have all closed is accepted while the watermark is less than the window end
plus the stream's ``allowed_lateness``; the windows it touches are recomputed and emitted again with
``revision`` + 1 (the record replaces the earlier one). A reading that misses a window beyond that yields a
``late`` record (``missed``: how many of its windows it missed). Rows stay buffered until no window they belong
to can change any more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ExprError
from ..expr import (
    Namespace,
    Scope,
    compile_expr,
    compile_vector,
    parse_expr,
    type_from_name,
)
from ..expr import nodes as n
from .clock import format_time, parse_duration
from .groups import DEVICE_LEVEL, Membership, levels_for
from .operators import TIME_KEY, BuildContext, Operator
from .records import Record, make_record
from .row_parts import RowParts
from .telemetry_stats import (
    BLOCK_FUNCTIONS,
    BlockColumn,
    Segments,
    StatSpec,
    block_stats,
    compute_stats,
    percentile_of,
    rollup_stats,
    segments_from_ids,
)
from .windows import DenseBlock, DenseWindows, WindowSpec, grid_index, grid_index_of

__all__ = ["AggregateOperator", "ComputeItem", "allowed_lateness", "parse_compute"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Event = dict[str, Any]


@dataclass(frozen=True)
class ComputeItem:
    """One parsed ``compute`` entry: the statistic and its argument expression (None for ``count()``)."""

    stat: StatSpec
    argument: n.Node | None
    text: str


def parse_compute(name: str, text: str) -> ComputeItem:
    """Parse ``"p95(temp)"``-style text into a :class:`ComputeItem`; raises ExprError (with offsets) when malformed.

    Accepted: ``count()``, ``count(x)``, ``sum``, ``mean``, ``min``, ``max``, ``var``, ``std``, ``median``,
    ``pNN`` (0 <= NN <= 100), ``percentile(x, q)`` (q a constant in [0, 100]), ``first``, ``last``, ``rate``,
    ``slope`` and ``distinct`` of one expression ``x``.
    """
    from .telemetry_stats import STAT_FUNCTIONS

    node = parse_expr(text)
    if not isinstance(node, n.Call):
        raise ExprError(
            "a statistic looks like mean(temp), p95(temp) or count()", code="not_a_statistic", offset=node.start,
            end_offset=node.end,
        )
    q = percentile_of(node.name)
    function = "percentile" if q is not None and node.name != "median" else node.name
    if node.name == "median":
        function = "median"
    if function not in STAT_FUNCTIONS:
        from ..errors import did_you_mean

        guess = did_you_mean(node.name, [*STAT_FUNCTIONS, "p50", "p95", "p99"])
        raise ExprError(
            f"unknown statistic '{node.name}'", code="unknown_statistic", offset=node.start,
            end_offset=node.start + len(node.name), hint=f"did you mean '{guess}'?" if guess else None,
        )
    args = node.args
    if node.name == "percentile":
        if len(args) != 2:
            raise ExprError("percentile takes a value and a constant percentile: percentile(temp, 99.9)",
                            code="arity", offset=node.start, end_offset=node.end)
        level = args[1]
        if not isinstance(level, n.Literal) or isinstance(level.value, bool) or not isinstance(level.value, (int, float)) \
                or not 0 <= level.value <= 100:
            raise ExprError("the percentile must be a number between 0 and 100", code="percentile",
                            offset=level.start, end_offset=level.end)
        q = float(level.value) / 100
        args = args[:1]
    elif node.name == "count" and not args:
        return ComputeItem(StatSpec(name, "count"), None, text)
    if len(args) != 1:
        raise ExprError(f"{node.name}() takes exactly one value", code="arity", offset=node.start, end_offset=node.end)
    argument = args[0]
    column = text[argument.start : argument.end]
    return ComputeItem(StatSpec(name, function, column, q), argument, text)


def allowed_lateness(plan: Mapping[str, Any] | None, stream: str | None) -> float:
    """The source stream's ``allowed_lateness`` from the plan's source operator config (0 when absent)."""
    if not plan or stream is None:
        return 0.0
    for segment in plan.get("segments", ()):
        for op in segment.get("operators", ()):
            if op.get("kind") == "source" and op.get("name") == stream:
                value = (op.get("config") or {}).get("allowed_lateness")
                return parse_duration(value) if value else 0.0
    return 0.0


def _types(fields: Mapping[str, str]) -> dict[str, Any]:
    return {k: type_from_name(v) for k, v in fields.items()}


def _to_array(values: list[Any]) -> Any:
    """A float64 array (None -> NaN) when every value is a number or null; an object array otherwise."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out


@dataclass
class _Closed:
    """Statistics of the windows one level closes: one entry per (window, group) segment."""

    level: int
    slots: I64
    starts: F64
    ends: F64
    wids: list[Any]
    values: dict[str, Any]
    devices: I64 | None = None

    def take(self, order: I64 | None) -> _Closed:
        """The same windows with the segments in ``order`` (None: as they are)."""
        if order is None:
            return self
        return _Closed(
            self.level, self.slots[order], self.starts[order], self.ends[order], [self.wids[i] for i in order.tolist()],
            {name: np.asarray(values)[order] for name, values in self.values.items()},
            None if self.devices is None else self.devices[order],
        )


class AggregateOperator(Operator):
    """Windowed statistics per group level (see module doc); ``process_columns`` takes columnar input directly."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        self.key = key
        self.window = WindowSpec.from_config(config["window"])
        self.items = [parse_compute(str(name), str(text)) for name, text in config["compute"]]
        self.stats = [item.stat for item in self.items]
        fields = dict(config.get("input_fields") or {})
        attribute_types = _types(ctx.device_attributes)
        self.scope = Scope(fields=_types(fields), namespaces={"device": Namespace("device", attribute_types)})
        attrs_of = ctx.attributes_of
        self.row_scope = Scope(
            fields=_types(fields),
            namespaces={"device": Namespace("device", attribute_types, getter=lambda row: attrs_of(row[key]))},
        )
        self.paths: set[tuple[str, ...]] = set()
        #: argument column name -> (vector kernel or None for a plain field, scalar fallback)
        self.arguments: dict[str, tuple[Any, Callable[[Any], Any] | None, str | None]] = {}
        for item in self.items:
            if item.argument is None or item.stat.column in self.arguments:
                continue
            self.paths |= n.field_paths(item.argument)
            self.arguments[str(item.stat.column)] = self._argument(item.argument, item.text)
        where = config.get("where")
        self.where: tuple[Any, Callable[[Any], Any]] | None = None
        if where:
            node = parse_expr(where)
            self.paths |= n.field_paths(node)
            self.where = (
                _try_vector(node, self.scope, True),
                compile_expr(node, self.row_scope, expect=type_from_name("boolean")),
            )
        scope_attrs = Scope(fields=attribute_types)
        self.levels = levels_for(config, lambda text: compile_expr(parse_expr(text), scope_attrs))
        registry = ctx.registry
        self.membership = Membership(
            self.levels, ctx.attributes_of, version=lambda: getattr(registry, "version", None),
            before_move=self._fill_rows,
        )
        self.group_level = next((i for i, lv in enumerate(self.levels) if not lv.per_device), None)
        self.device_level = next((i for i, lv in enumerate(self.levels) if lv.per_device), None)
        self.stream = ctx.source_of.get(self.id)
        self.allowed = allowed_lateness(ctx.plan, self.stream)
        self.emit_events = bool(spec.get("outputs"))
        self.history = None
        if config.get("history"):
            from ..storage.history import history_for

            self.history = history_for(ctx.store)
        self._chunks: list[dict[str, Any]] = []
        #: an upper bound on the event time of every buffered row
        self.latest = -math.inf
        self.closed_until = -math.inf
        self.tick = 0
        self.uid = 0
        self.pending = math.inf
        #: a lower bound on when some buffered row stops being needed (then a close pass evicts it)
        self.evict_at = math.inf
        self.dirty = False
        #: (level, slot, window id) -> (window end, revision) of emitted windows that may still be revised
        self.emitted: dict[tuple[int, int, Any], tuple[float, int]] = {}
        #: sessions: (level, slot) -> {start: (end, revision)}
        self.sessions: dict[tuple[int, int], dict[float, tuple[float, int]]] = {}
        self._iso = _IsoTimes()
        self._grid: tuple[I64, I64] | None = None
        #: coded input: the distinct ids it was given, their device indices, and whether code == index throughout
        self._names: tuple[Any, I64, bool] | None = None
        #: argument columns holding values other than numbers: value -> code, for distinct()
        self._codes: dict[str, dict[Any, int]] = {}
        self._numeric = {s.column for s in self.stats if s.column is not None and s.function != "distinct"}
        self._distinct = {s.column for s in self.stats if s.column is not None and s.function == "distinct"}
        #: threads for the passes over a closing window's blocks
        self._parts = RowParts(ctx.threads)
        #: tumbling windows whose statistics need no event times: open windows also kept as dense blocks
        self._dense: DenseWindows | None = None
        if self.window.kind == "tumbling" and all(s.function in BLOCK_FUNCTIONS for s in self.stats):
            self._dense = DenseWindows(sorted({f"c:{s.column}" for s in self.stats if s.column is not None}),
                                       parts=self._parts)
        self._ranks: dict[int, I64] = {}

    # ------------------------------------------------------------------------------------------------ building
    def _argument(self, node: n.Node, text: str) -> tuple[Any, Callable[[Any], Any] | None, str | None]:
        if isinstance(node, n.Field):
            return None, None, node.dotted
        return _try_vector(node, self.scope, False), compile_expr(node, self.row_scope), None

    # ------------------------------------------------------------------------------------------------- ingest
    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Buffer the batch's readings (dict events); closing happens in :meth:`on_time`."""
        devices = _field(batch, self.key)
        columns = self._columns(batch)
        if self.where is not None:
            keep = self._where(batch, columns)
            if not keep.all():
                index = np.flatnonzero(keep)
                batch = [batch[i] for i in index.tolist()]
                devices = [devices[i] for i in index.tolist()]
                columns = {name: col[index] for name, col in columns.items()}
        if not batch:
            return []
        t = np.array(list(map(itemgetter(TIME_KEY), batch)), dtype=np.float64)
        values = self._evaluate(columns, batch)
        dev = self.membership.device_indices(devices, batch)
        self._ingest(t, dev, values, records, batch)
        return []

    def process_columns(
        self,
        t: F64,
        devices: Sequence[str] | tuple[Any, Sequence[str]],
        columns: Mapping[str, Any],
        records: list[Record],
    ) -> None:
        """Columnar entry point: event times, device ids (or ``(codes, distinct ids)``) and field columns.

        ``columns`` holds the fields the statistics read, by field path (``"temp"``, ``"device.firmware"``).
        The ``where`` condition, when present, is applied to the columns.
        """
        codes: I64 | None = None
        if isinstance(devices, tuple):
            names = devices[1]
            if self._names is None or self._names[0] is not names or len(self._names[1]) != len(names):
                self._fill_rows()  # buffered codes index the current table: resolve them before it is replaced
                table = self.membership.device_indices(list(names))
                self._names = (names, table, bool((table == np.arange(table.size)).all()))
            else:
                self.membership.refresh()
            codes = np.asarray(devices[0], dtype=np.int64)
            dev = codes if self._names[2] else self._names[1].take(codes)
        else:
            dev = self.membership.device_indices(list(devices))
        t = np.asarray(t, dtype=np.float64)
        cols = {name: np.asarray(col) for name, col in columns.items()}
        if self.where is not None and self.where[0] is not None:
            keep = np.asarray(self.where[0](cols), dtype=bool)
            t, dev = t[keep], dev[keep]
            codes = None if codes is None else codes[keep]
            cols = {name: col[keep] for name, col in cols.items()}
        self._ingest(t, dev, self._evaluate(cols, None), records, None, codes)

    def _columns(self, batch: list[Event]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        attrs_of = self.ctx.attributes_of
        key = self.key
        for path in sorted(self.paths):
            name = ".".join(path)
            if path[0] == "device" and len(path) == 2:
                attr = path[1]
                out[name] = _to_array([attrs_of(e.get(key) or "").get(attr) for e in batch])
            elif len(path) == 1:
                out[name] = _to_array(_field(batch, name))
            else:
                out[name] = _to_array([_dig(e, path) for e in batch])
        return out

    def _where(self, batch: list[Event], columns: dict[str, Any]) -> Any:
        assert self.where is not None
        kernel, scalar = self.where
        if kernel is not None:
            try:
                return np.asarray(kernel(columns), dtype=bool)
            except (ExprError, TypeError, ValueError):
                pass
        keep = np.zeros(len(batch), dtype=bool)
        for i, event in enumerate(batch):
            try:
                keep[i] = bool(scalar(event))
            except (ExprError, KeyError, TypeError):
                keep[i] = False  # a reading the condition cannot be evaluated on is not selected
        return keep

    def _evaluate(self, columns: Mapping[str, Any], batch: list[Event] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        size = len(next(iter(columns.values()))) if columns else 0
        for name, (kernel, scalar, field) in self.arguments.items():
            if field is not None:
                out[name] = columns[field] if field in columns else np.full(size, np.nan)
                continue
            try:
                out[name] = _float_or_object(kernel(columns)) if kernel is not None else None
            except (ExprError, TypeError, ValueError, KeyError):
                out[name] = None
            if out[name] is None:
                out[name] = self._scalar_column(scalar, batch, size)
        return out

    @staticmethod
    def _scalar_column(scalar: Callable[[Any], Any] | None, batch: list[Event] | None, size: int) -> Any:
        """Row-at-a-time fallback for an argument the vector kernel cannot compute (errors -> missing)."""
        if scalar is None or batch is None:
            return np.full(size, np.nan)
        values: list[Any] = []
        for event in batch:
            try:
                values.append(scalar(event))
            except (ExprError, KeyError, TypeError):
                values.append(None)
        return _to_array(values)

    def _ingest(
        self, t: F64, dev: I64, values: dict[str, Any], records: list[Record], events: list[Event] | None,
        codes: I64 | None = None,
    ) -> None:
        """Buffer readings (``codes``: the device codes of coded input, which ``dev`` translates) and add them to
        the dense blocks; readings whose windows have all closed become revisions or ``late`` records."""
        if t.size == 0:
            return
        window, allowed, closed = self.window, self.allowed, self.closed_until
        # the earliest window end of a reading only grows with its time: look at the batch's earliest reading first
        t_min = float(t.min())
        earliest = self._first_end(t_min)
        if closed > -math.inf and earliest + allowed <= closed:
            missed_all = window.last_end(t) + allowed <= closed
            missed_some = window.first_end(t) + allowed <= closed
            self._late(t, dev, values, missed_all, missed_some, records, events)
            keep = ~missed_all
            t, dev = t[keep], dev[keep]
            codes = None if codes is None else codes[keep]
            values = {name: col[keep] for name, col in values.items()}
            if t.size == 0:
                return
            t_min = float(t.min())
            earliest = self._first_end(t_min)
        if earliest <= closed:
            self.dirty = True
        t_max = float(t.max())
        self.latest = max(self.latest, t_max)
        # the arrival tick of every row is one number until the rows are read (see _fill_rows); coded input keeps
        # its codes (the device indices are filled in when needed), and no chunk has slot columns yet
        chunk: dict[str, Any] = {"t": t, "tick": self.tick}
        if codes is None:
            chunk["dev"] = dev
        else:
            chunk["codes"] = codes
        if window.kind == "sliding":
            chunk["uid"] = np.arange(self.uid, self.uid + t.size, dtype=np.int64)
        self.uid += t.size
        for name, col in values.items():
            chunk.update(self._encode(name, col))
        self._chunks.append(chunk)
        self.pending = min(self.pending, earliest)
        if self._dense is not None:
            self._densify(dev, chunk, t_min, t_max)

    def _fill_rows(self) -> None:
        """Give every buffered chunk its device indices (``dev``, from the codes of coded input) and its slot
        columns (``slot0``, ...), from the current code table and membership.

        Chunks get them lazily: called before the code table is replaced or the membership moves a device (the
        rows keep the devices and groups they arrived with) and before the rows are read by device or level. The
        arrival column (each row's close tick when it arrived) is spelled out then too."""
        for chunk in self._chunks:
            if "tick" in chunk:
                chunk["arrival"] = np.full(chunk["t"].shape, chunk.pop("tick"), dtype=np.int32)
            if "codes" in chunk:
                assert self._names is not None
                chunk["dev"] = self._names[1].take(chunk.pop("codes"))
            if "slot0" not in chunk:
                for level in range(len(self.levels)):
                    chunk[f"slot{level}"] = self.membership.slots(level, chunk["dev"])

    def _densify(self, dev: I64, chunk: dict[str, Any], t_min: float, t_max: float) -> None:
        """Add a chunk's readings (devices ``dev``, times from ``t_min`` to ``t_max``) of windows not yet closed
        to the dense blocks."""
        assert self._dense is not None
        window, closed, t = self._dense, self.closed_until, chunk["t"]
        every, size = self.window.every, self.window.size
        k_lo, k_hi = grid_index_of(t_min, every), grid_index_of(t_max, every)
        generation, devices = self.membership.generation, len(self.membership.ids)
        columns = window.columns
        if k_lo == k_hi:
            if k_lo * every + size > closed:
                window.add(k_lo, dev, {name: chunk[name] for name in columns}, generation, devices)
            return
        k = grid_index(t, every)
        for key in np.unique(k).tolist():
            if key * every + size > closed:
                rows = k == key
                window.add(key, dev[rows], {name: chunk[name][rows] for name in columns}, generation, devices)

    def _first_end(self, t: float) -> float:
        """The end of the earliest window a reading at ``t`` belongs to (tumbling: its only window)."""
        if self.window.kind == "tumbling":
            return self.window.last_end_at(t)
        return float(self.window.first_end(np.array([t]))[0])

    def _encode(self, name: str, col: Any) -> dict[str, Any]:
        """Buffer columns for one argument: ``c:`` float values (NaN = missing) and, for distinct() over values
        that are not all numbers, ``d:`` float codes (one per distinct value)."""
        out: dict[str, Any] = {}
        if col.dtype.kind != "O":
            out[f"c:{name}"] = col.astype(np.float64, copy=False)
            return out
        if name in self._numeric:
            out[f"c:{name}"] = _numbers(col)
        if name in self._distinct:
            table = self._codes.setdefault(name, {})
            add = table.setdefault
            values = col.tolist()
            try:
                codes = [None if v is None else add(v, len(table)) for v in values]
            except TypeError:  # unhashable values (lists, mappings) are compared by their text
                codes = [None if v is None else add(_hashable(v), len(table)) for v in values]
            out[f"d:{name}"] = np.array(codes, dtype=np.float64)
        return out

    def _late(
        self, t: F64, dev: I64, values: dict[str, Any], missed_all: Any, missed_some: Any, records: list[Record],
        events: list[Event] | None,
    ) -> None:
        window, allowed, closed = self.window, self.allowed, self.closed_until
        if window.kind == "hopping":
            first, _ = window.grid_range(t)
            ends = first * window.every + window.size
            count = window.windows_of(t)
            missed = np.minimum(np.ceil((closed - allowed - ends) / window.every).astype(np.int64) + 1, count)
            missed = np.where(missed_some, np.maximum(missed, 1), 0)
        else:
            missed = missed_some.astype(np.int64)
        ids = self.membership.ids
        for i in np.flatnonzero(missed_some).tolist():
            if events is not None:
                original = {k: v for k, v in events[i].items() if k != TIME_KEY}
            else:
                original = {"device": ids[int(dev[i])], "time": float(t[i])}
                original.update({name: _plain(col[i]) for name, col in values.items()})
            records.append(
                make_record(
                    "late", float(t[i]), self.name, device=ids[int(dev[i])], reason="beyond allowed lateness",
                    watermark=format_time(closed), missed=int(missed[i]), counted=not bool(missed_all[i]),
                    event=original, segment=self.segment,
                )
            )

    # ------------------------------------------------------------------------------------------------ closing
    def on_time(self, now: float, records: list[Record]) -> list[Event]:
        """Close every window the source watermark has passed; re-emit windows revised by late data."""
        watermark = self.ctx.watermarks.get(self.stream, -math.inf) if self.stream is not None else -math.inf
        return self._close(watermark, records)

    def flush(self, records: list[Record]) -> list[Event]:
        """End of input: close every window."""
        return self._close(math.inf, records)

    def _rows(self) -> dict[str, Any]:
        """Every buffered row, as one chunk (with its slot columns)."""
        self._fill_rows()
        if len(self._chunks) != 1:
            if not self._chunks:
                return {}
            keys = self._chunks[0].keys()
            self._chunks = [{k: np.concatenate([c[k] for c in self._chunks]) for k in keys}]
        return self._chunks[0]

    def _close(self, watermark: float, records: list[Record]) -> list[Event]:
        wm = max(watermark, self.closed_until)
        if not self.dirty and wm < self.pending and wm < self.evict_at:
            if wm > self.closed_until and not math.isinf(wm):
                self.closed_until = wm
            return []
        if self._dense is not None:
            due = self._dense.ending_by(wm, self.window)
            if not self.dirty and all(self._dense_ready(k) for k in due):
                return self._close_dense(due, wm, records)
            for k in due:  # the row buffer closes them below
                self._dense.recycle(self._dense.pop(k))
        rows = self._rows()
        if not rows:
            self.closed_until = wm
            self.pending, self.evict_at, self.dirty = math.inf, math.inf, False
            self._forget(wm)
            return []
        closed: list[_Closed] = []
        keep = np.zeros(rows["t"].size, dtype=bool)
        self._grid = self.window.grid_range(rows["t"]) if self.window.grid else None
        for level in range(len(self.levels)):
            result, needed = self._close_level(level, rows, wm)
            keep |= needed
            if result is not None:
                closed.append(result)
        events = self._emit(closed, records)
        self._evict(rows, keep, wm)
        self.closed_until = wm
        self.tick += 1
        self.dirty = False
        return events

    def _dense_ready(self, k: int) -> bool:
        assert self._dense is not None
        block = self._dense.blocks[k]
        return block.usable and block.generation == self.membership.generation

    def _close_dense(self, due: list[int], wm: float, records: list[Record]) -> list[Event]:
        """Close tumbling windows from their dense blocks (no sort of the rows); evict rows chunk by chunk."""
        assert self._dense is not None
        closed: list[_Closed] = []
        for k in due:
            block = self._dense.pop(k)
            closed.extend(self._dense_results(block, k))  # statistics in new arrays: the cells are free again
            self._dense.recycle(block)
        events = self._emit(closed, records)
        self._evict_chunks(wm)
        self.closed_until = wm
        self.tick += 1
        return events

    def _dense_results(self, block: DenseBlock, k: int) -> list[_Closed]:
        """One closed window's statistics per level, from its dense block (every level's rows are the devices)."""
        active = block.active()  # a block only exists once it has readings
        rows = block.counts[active]
        specs = self._specs(block.cells)
        # the window is closed: its cells' arrival order no longer matters, percentiles may sort them in place
        ordered = {spec.column for spec in specs if spec.function in ("median", "percentile")}
        columns: dict[str, BlockColumn] = {}
        for name in block.cells:  # each column copied, sorted and reduced row by row, a part of the rows per thread
            cells, fill = block.column_rows(name, active)
            columns[name] = BlockColumn(cells, rows, sort=name in ordered, fill=fill,
                                        prepare=_row_keys(specs, name), parts=self._parts)
        begin = k * self.window.every
        end = begin + self.window.size
        out: list[_Closed] = []
        for level, entry in enumerate(self.levels):
            slots = self.membership.slots(level, active)
            if entry.per_device:
                values, devices = block_stats(specs, columns, rows), active
            else:
                slots, values = rollup_stats(specs, columns, rows, slots)
                devices = None
                if slots.size == 0:
                    continue
            count = slots.size
            out.append(_Closed(level, slots, np.full(count, begin), np.full(count, end), [k] * count, values, devices))
        return out

    def _evict_chunks(self, wm: float) -> None:
        """Drop the buffered rows no window can need any more, chunk by chunk (no concatenation)."""
        if self._chunks and self.window.last_end_at(self.latest) + self.allowed > wm:
            self._chunks = self._kept_chunks(wm)
        else:
            self._chunks = []  # the windows of every buffered row are closed for good
        if not self._chunks:
            self.latest = -math.inf
        self._forget(wm)
        self.pending = min((self._next_due(chunk, wm) for chunk in self._chunks), default=math.inf)
        self.evict_at = min((self._next_evict(chunk) for chunk in self._chunks), default=math.inf)

    def _kept_chunks(self, wm: float) -> list[dict[str, Any]]:
        """The buffered chunks, each reduced to the rows that a window still open (or revisable) may need."""
        window, allowed = self.window, self.allowed
        any_device_level = self.device_level is not None
        kept: list[dict[str, Any]] = []
        if not any_device_level:
            self._fill_rows()
        for chunk in self._chunks:
            t = chunk["t"]
            if window.last_end_at(float(t.max())) + allowed <= wm:
                continue
            if window.last_end_at(float(t.min())) + allowed > wm and any_device_level:
                kept.append(chunk)
                continue
            keep = window.last_end(t) + allowed > wm
            if not any_device_level:
                member = np.zeros(t.size, dtype=bool)
                for level in range(len(self.levels)):
                    member |= chunk[f"slot{level}"] >= 0
                keep &= member
            if keep.all():
                kept.append(chunk)
            elif keep.any():
                kept.append({name: col if name == "tick" else col[keep] for name, col in chunk.items()})
        return kept

    def _close_level(self, level: int, rows: dict[str, Any], wm: float) -> tuple[_Closed | None, Any]:
        slot_all = rows[f"slot{level}"]
        member = np.flatnonzero(slot_all >= 0)
        needed = np.zeros(slot_all.size, dtype=bool)
        if member.size == 0:
            return None, needed
        if self.window.grid:
            return self._close_grid(level, rows, member, wm, needed)
        if self.window.kind == "session":
            return self._close_sessions(level, rows, member, wm, needed)
        return self._close_sliding(level, rows, member, wm, needed)

    def _close_grid(
        self, level: int, rows: dict[str, Any], member: I64, wm: float, needed: Any
    ) -> tuple[_Closed | None, Any]:
        window, allowed, closed = self.window, self.allowed, self.closed_until
        t_all = rows["t"]
        assert self._grid is not None
        everyone = member.size == t_all.size
        first, last = self._grid if everyone else (self._grid[0][member], self._grid[1][member])
        needed[member] = last * window.every + window.size + allowed > wm
        if window.kind == "tumbling":
            rix, k = member, first
        else:
            count = last - first + 1
            rix = np.repeat(member, count)
            k = np.repeat(first, count) + (np.arange(rix.size) - np.repeat(np.cumsum(count) - count, count))
            everyone = False
        end = k * window.every + window.size
        due = end <= wm
        if not due.any():
            return None, needed
        slot = rows[f"slot{level}"] if everyone else rows[f"slot{level}"][rix]
        nslots = int(slot.max()) + 1
        kmin = int(k[due].min())
        ids = slot if (everyone and int(k.max()) == kmin) else (k - kmin) * nslots + slot
        fresh = due & (end > closed)
        if self.dirty:
            late = due & ~fresh & (end + allowed > closed) & (rows["arrival"][rix] >= self.tick)
            if late.any():
                fresh |= due & np.isin(ids, np.unique(ids[late]))
        if not fresh.all():
            if not fresh.any():
                return None, needed
            rix, ids, k = rix[fresh], ids[fresh], k[fresh]
        order, starts, counts = segments_from_ids(ids)
        picked = rix[order]
        values = compute_stats(self._specs(rows), Segments(starts, counts, t_all[picked], self._gather(rows, picked)))
        first_rows = order[starts]
        seg_k = k[first_rows]
        slots = rows[f"slot{level}"][rix[first_rows]]
        begin = np.asarray(seg_k * window.every, dtype=np.float64)
        return _Closed(level, slots, begin, begin + window.size, seg_k.tolist(), values,
                       rows["dev"][rix[first_rows]]), needed

    def _close_sessions(
        self, level: int, rows: dict[str, Any], member: I64, wm: float, needed: Any
    ) -> tuple[_Closed | None, Any]:
        gap, allowed, closed = self.window.size, self.allowed, self.closed_until
        slot_all, t_all = rows[f"slot{level}"], rows["t"]
        rix = member[np.lexsort((t_all[member], slot_all[member]))]
        slot, t = slot_all[rix], t_all[rix]
        starts_mask = np.ones(rix.size, dtype=bool)
        starts_mask[1:] = (slot[1:] != slot[:-1]) | (t[1:] - t[:-1] >= gap)
        starts = np.flatnonzero(starts_mask)
        counts = np.diff(np.append(starts, rix.size))
        end = t[starts + counts - 1] + gap
        needed[rix] = np.repeat(end + allowed > wm, counts)
        due = end <= wm
        fresh = due & (end > closed)
        if self.dirty:
            has_new = np.maximum.reduceat((rows["arrival"][rix] >= self.tick).astype(np.int8), starts) > 0
            fresh |= due & has_new & (end + allowed > closed)
        if not fresh.any():
            return None, needed
        chosen_starts, chosen_counts = starts[fresh], counts[fresh]
        take = np.repeat(chosen_starts, chosen_counts) + (
            np.arange(int(chosen_counts.sum())) - np.repeat(np.cumsum(chosen_counts) - chosen_counts, chosen_counts)
        )
        seg_starts = (np.cumsum(chosen_counts) - chosen_counts).astype(np.int64)
        picked = rix[take]
        segs = Segments(seg_starts, chosen_counts.astype(np.int64), t_all[picked], self._gather(rows, picked))
        values = compute_stats(self._specs(rows), segs)
        begin = t[chosen_starts]
        return _Closed(level, slot[chosen_starts], begin, end[fresh], begin.tolist(), values,
                       rows["dev"][rix[chosen_starts]]), needed

    def _close_sliding(
        self, level: int, rows: dict[str, Any], member: I64, wm: float, needed: Any
    ) -> tuple[_Closed | None, Any]:
        size, allowed, closed = self.window.size, self.allowed, self.closed_until
        slot_all, t_all = rows[f"slot{level}"], rows["t"]
        rix = member[np.lexsort((t_all[member], slot_all[member]))]
        slot, t = slot_all[rix], t_all[rix]
        needed[rix] = t + size + allowed > wm
        due = t <= wm
        fresh = due & (t > closed)
        candidates = due & (t + allowed > closed) if self.dirty else fresh
        if not candidates.any():
            return None, needed
        lo = _trailing_starts(slot, t, size)
        ends_idx = np.flatnonzero(candidates)
        lengths = ends_idx - lo[ends_idx] + 1
        take = np.repeat(lo[ends_idx], lengths) + (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        seg_starts = (np.cumsum(lengths) - lengths).astype(np.int64)
        if self.dirty:
            new = (rows["arrival"][rix[take]] >= self.tick).astype(np.int8)
            has_new = np.maximum.reduceat(new, seg_starts) > 0
            select = fresh[ends_idx] | has_new
            if not select.all():
                ends_idx = ends_idx[select]
                lengths = lengths[select]
                if ends_idx.size == 0:
                    return None, needed
                take = np.repeat(lo[ends_idx], lengths) + (
                    np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                )
                seg_starts = (np.cumsum(lengths) - lengths).astype(np.int64)
        picked = rix[take]
        segs = Segments(seg_starts, lengths.astype(np.int64), t_all[picked], self._gather(rows, picked))
        values = compute_stats(self._specs(rows), segs)
        ends = t[ends_idx]
        return _Closed(level, slot[ends_idx], ends - size, ends, rows["uid"][rix[ends_idx]].tolist(), values,
                       rows["dev"][rix[ends_idx]]), needed

    @staticmethod
    def _gather(rows: dict[str, Any], picked: I64) -> dict[str, Any]:
        return {k: v[picked] for k, v in rows.items() if k[:2] in ("c:", "d:")}

    def _specs(self, rows: dict[str, Any]) -> list[StatSpec]:
        """The statistics with their buffer column names (distinct over coded values reads the ``d:`` column)."""
        out = []
        for spec in self.stats:
            if spec.column is None:
                out.append(spec)
            elif spec.function == "distinct" and f"d:{spec.column}" in rows:
                out.append(StatSpec(spec.name, spec.function, f"d:{spec.column}", spec.q))
            else:
                out.append(StatSpec(spec.name, spec.function, f"c:{spec.column}", spec.q))
        return out

    def _evict(self, rows: dict[str, Any], keep: Any, wm: float) -> None:
        if not keep.all():
            self._chunks = [{k: v[keep] for k, v in rows.items()}] if keep.any() else []
        rows = self._chunks[0] if self._chunks else {}
        if not rows:
            self.latest = -math.inf
        self._forget(wm)
        self.pending = self._next_due(rows, wm)
        self.evict_at = self._next_evict(rows)

    def _forget(self, wm: float) -> None:
        """Drop the revision bookkeeping of windows that can no longer change."""
        horizon = wm - self.allowed
        if self.emitted:
            self.emitted = {k: v for k, v in self.emitted.items() if v[0] > horizon}
        if self.sessions:
            for key in list(self.sessions):
                kept = {s: v for s, v in self.sessions[key].items() if v[0] > horizon}
                if kept:
                    self.sessions[key] = kept
                else:
                    del self.sessions[key]

    def _next_evict(self, rows: dict[str, Any]) -> float:
        if not rows:
            return math.inf
        earliest = float(rows["t"].min())
        window = self.window
        if window.grid:
            end = float(window.last_end(np.array([earliest]))[0])
        else:
            end = earliest + window.size  # session: its session ends later; sliding: later windows need it
        return end + self.allowed

    def _next_due(self, rows: dict[str, Any], wm: float) -> float:
        """A lower bound on the end of any window not yet emitted (nothing is due before it)."""
        if not rows:
            return math.inf
        t = rows["t"]
        window = self.window
        if window.grid:
            earliest = np.array([t.min()])
            if float(window.last_end(earliest)[0]) > wm:  # window ends grow with t: every row is open
                return max(window.next_grid_end(wm), float(window.first_end(earliest)[0]))
            open_rows = window.last_end(t) > wm
            if not open_rows.any():
                return math.inf
            return max(window.next_grid_end(wm), float(window.first_end(t[open_rows]).min()))
        ends = t + window.size if window.kind == "session" else t
        ahead = ends[ends > wm]
        return float(ahead.min()) if ahead.size else math.inf

    # ------------------------------------------------------------------------------------------------- output
    def _revision(self, level: int, slot: int, wid: Any, start: float, end: float) -> int:
        """The revision of a window about to be emitted (0 the first time), remembered while it can change."""
        if self.window.kind == "session":
            known = self.sessions.setdefault((level, slot), {})
            overlapping = [s for s, (e, _) in known.items() if s < end and start < e]
            revision = max((known.pop(s)[1] for s in overlapping), default=-1) + 1
            known[start] = (end, revision)
            return revision
        previous = self.emitted.get((level, slot, wid))
        revision = 0 if previous is None else previous[1] + 1
        self.emitted[(level, slot, wid)] = (end, revision)
        return revision

    def _emit(self, closed: list[_Closed], records: list[Record]) -> list[Event]:
        if not closed:
            return []
        produced = self._in_order(closed)
        records.extend(produced)
        if self.history is not None:
            self.history.write(produced)
        if not self.emit_events:
            return []
        key, name = self.key, self.name
        return [
            {**r["values"], TIME_KEY: r["window_end"], key: r["device"], "group": r["group"], "level": r["level"],
             "window_start": r["window_start"], "window_end": r["window_end"], "revision": r["revision"],
             "aggregate": name}
            for r in produced
        ]

    def _in_order(self, closed: list[_Closed]) -> list[Record]:
        """The records of the closed windows by window end, then level, then group key (text order).

        When each level's segments share one window end (one window per entry, as the dense blocks close), the
        segments are put in key order with numpy and the records built in their final order; otherwise the
        records are built level by level and then reordered."""
        if all(c.ends.min() == c.ends.max() for c in closed):
            produced: list[Record] = []
            for c in sorted(closed, key=lambda c: (float(c.ends[0]), c.level)):
                produced.extend(self._records(c.take(_ascending_order(self._key_ranks(c.level)[c.slots]))))
            return produced
        ends = np.concatenate([c.ends for c in closed])
        level_of = np.concatenate([np.full(c.ends.size, c.level) for c in closed])
        rank_of = np.concatenate([self._key_ranks(c.level)[c.slots] for c in closed])
        order = np.lexsort((rank_of, level_of, ends)).tolist()
        built = [record for c in closed for record in self._records(c)]
        return [built[i] for i in order]

    def _records(self, c: _Closed) -> list[Record]:
        """The aggregate records of one level's closed windows (in segment order)."""
        names = tuple(s.name for s in self.stats)
        rows = list(map(_row_maker(names), *[_plain_list(c.values[n]) for n in names])) if names else \
            [{} for _ in range(c.slots.size)]
        level = self.levels[c.level]
        devices: list[str | None] | None = None
        if level.per_device:
            # levels_for always puts a group level (or "all") before the device level
            assert self.group_level is not None and c.devices is not None
            devices = self.membership.keys_of(c.level, c.slots)
            groups = self.membership.keys_of(self.group_level, self.membership.slots(self.group_level, c.devices))
            level_name = DEVICE_LEVEL
        else:
            groups, level_name = self.membership.keys_of(c.level, c.slots), level.name
        revisions = self._revisions(c) if self.allowed > 0 else None
        if c.starts.size and bool((c.starts == c.starts[0]).all()) and bool((c.ends == c.ends[0]).all()):
            return self._window_records(float(c.starts[0]), float(c.ends[0]), level_name, groups, devices, rows,
                                        revisions)
        iso, name, segment = self._iso, self.name, self.segment
        return [
            {"kind": "aggregate", "at": iso(end), "node": name, "level": level_name, "group": group, "device": device,
             "start": iso(start), "end": iso(end), "window_start": start, "window_end": end, "revision": revision,
             "values": row, "segment": segment}
            for row, device, group, start, end, revision in zip(
                rows, devices or repeat(None), groups, c.starts.tolist(), c.ends.tolist(), revisions or repeat(0))
        ]

    def _revisions(self, c: _Closed) -> list[int]:
        """The revision of each closed window (see :meth:`_revision`)."""
        return [self._revision(c.level, slot, wid, start, end) for slot, wid, start, end in
                zip(c.slots.tolist(), c.wids, c.starts.tolist(), c.ends.tolist(), strict=True)]

    def _window_records(
        self, start: float, end: float, level_name: str, groups: list[str | None], devices: list[str | None] | None,
        rows: list[dict[str, Any]], revisions: list[int] | None,
    ) -> list[Record]:
        """The records of one window ``[start, end)``: copies of one prototype, each with its group, device (None
        for group levels), values and revision (0 when none are given)."""
        iso = self._iso
        proto = _key_sharing({
            "kind": "aggregate", "at": iso(end), "node": self.name, "level": level_name, "group": None,
            "device": None, "start": iso(start), "end": iso(end), "window_start": start, "window_end": end,
            "revision": 0, "values": None, "segment": self.segment,
        })
        out = list(map(dict.copy, repeat(proto, len(rows))))
        for record, group, device, row in zip(out, groups, devices or repeat(None), rows):
            record["group"] = group
            record["device"] = device
            record["values"] = row
        if revisions is not None:
            for record, revision in zip(out, revisions, strict=True):
                record["revision"] = revision
        return out

    def _key_ranks(self, level: int) -> I64:
        """Slot -> rank of its key in text order (records come out sorted by key, whatever the arrival order).

        Keys are only ever appended to a level, so the ranks are kept until the level has more keys."""
        keys = self.membership.keys(level)
        ranks = self._ranks.get(level)
        if ranks is None or ranks.size != len(keys):
            ranks = np.empty(len(keys), dtype=np.int64)
            ranks[np.argsort(np.array(keys, dtype=str), kind="stable")] = np.arange(len(keys))
            self._ranks[level] = ranks
        return ranks

    # ---------------------------------------------------------------------------------------------- snapshots
    def snapshot(self) -> Any:
        """Buffered rows (device ids, times, argument columns) and the close/revision bookkeeping."""
        rows = self._rows()
        state: dict[str, Any] = {
            "closed_until": None if math.isinf(self.closed_until) else self.closed_until,
            "tick": self.tick,
            "uid": self.uid,
            "emitted": [[lv, slot_key, wid, end, rev] for (lv, slot, wid), (end, rev) in sorted(self.emitted.items())
                        for slot_key in [self.membership.key(lv, slot)]],
            "sessions": [[lv, self.membership.key(lv, slot), start, end, rev]
                         for (lv, slot), known in sorted(self.sessions.items())
                         for start, (end, rev) in sorted(known.items())],
        }
        if rows:
            ids = self.membership.ids
            state["rows"] = {
                "t": rows["t"].tolist(),
                "device": [ids[i] for i in rows["dev"].tolist()],
                "arrival": rows["arrival"].tolist(),
                "uid": rows["uid"].tolist() if "uid" in rows else None,
                "columns": {k: _plain_list(v) for k, v in rows.items() if k[:2] in ("c:", "d:")},
            }
        if self._codes:
            state["codes"] = {name: [[v, c] for v, c in table.items()] for name, table in sorted(self._codes.items())}
        return state

    def restore(self, state: Any) -> None:
        """Take back a :meth:`snapshot` (group membership is recomputed from the current registry)."""
        closed = state.get("closed_until")
        self.closed_until = -math.inf if closed is None else float(closed)
        self.tick = int(state["tick"])
        self.uid = int(state["uid"])
        self._chunks, self.latest = [], -math.inf
        self.pending, self.evict_at, self.dirty = math.inf, math.inf, False
        self._codes = {name: {_hashable(v): int(c) for v, c in pairs} for name, pairs in state.get("codes", {}).items()}
        if self._dense is not None:
            self._dense = DenseWindows(self._dense.columns, parts=self._parts)
        saved = state.get("rows")
        if saved:
            t = np.asarray(saved["t"], dtype=np.float64)
            dev = self.membership.device_indices(saved["device"])
            chunk: dict[str, Any] = {"t": t, "dev": dev, "arrival": np.asarray(saved["arrival"], dtype=np.int32)}
            if saved.get("uid") is not None:
                chunk["uid"] = np.asarray(saved["uid"], dtype=np.int64)
            for name, col in saved["columns"].items():
                chunk[name] = np.array([np.nan if v is None else v for v in col], dtype=np.float64)
            self._chunks = [chunk]
            self.latest = float(t.max())
            self.pending = self._next_due(chunk, self.closed_until)
            self.evict_at = self._next_evict(chunk)
            if self._dense is not None:
                self._densify(dev, chunk, float(t.min()), self.latest)
        self.emitted = {}
        for lv, key, wid, end, rev in state.get("emitted", []):
            self.emitted[(int(lv), self.membership.levels[int(lv)].slot(str(key)), wid)] = (float(end), int(rev))
        self.sessions = {}
        for lv, key, start, end, rev in state.get("sessions", []):
            slot = self.membership.levels[int(lv)].slot(str(key))
            self.sessions.setdefault((int(lv), slot), {})[float(start)] = (float(end), int(rev))


class _Fields:
    """An empty holder: its instances' attribute dicts share one key table (see :func:`_key_sharing`)."""


def _key_sharing(fields: Record) -> Record:
    """A dict equal to ``fields`` whose copies share one key table, as instance attribute dicts do (PEP 412).

    Copying it allocates only the values, not a key table per copy: building thousands of records with the same
    fields takes about half the memory and time. Any dict operation works on the copies (a new key simply gives
    that copy its own table)."""
    holder = _Fields()
    for name, value in fields.items():
        setattr(holder, name, value)
    return holder.__dict__


class _IsoTimes:
    """``format_time`` with a small cache: window bounds repeat across the groups of a window. Small on purpose
    (see ``records._format_at``): what it keeps alive stays scattered over the heap."""

    def __init__(self) -> None:
        self.cache: dict[float, str] = {}

    def __call__(self, t: float) -> str:
        found = self.cache.get(t)
        if found is None:
            if len(self.cache) >= 1024:
                self.cache.clear()
            found = self.cache[t] = format_time(t)
        return found


def _row_keys(specs: Sequence[StatSpec], column: str) -> set[str]:
    """The per-row intermediates (:data:`.telemetry_stats.ROW_KEYS`) the statistics over ``column`` read, per
    device and in the group roll-ups (counts, sums and means for every statistic but a percentile)."""
    keys = {"n"}
    for spec in specs:
        if spec.column != column or spec.function in ("median", "percentile"):
            continue
        keys |= {"sum", "mean"}
        if spec.function in ("min", "max"):
            keys.add(spec.function)
        elif spec.function in ("var", "std"):
            keys.add("m2")
    return keys


def _trailing_starts(slot: I64, t: F64, size: float) -> I64:
    """Rows sorted by (slot, t): for each row, the index of the first row of its slot with ``t_j > t_i - size``."""
    count = slot.size
    keys_slot = np.concatenate((slot, slot))
    keys_t = np.concatenate((t, t - size))
    flag = np.concatenate((np.zeros(count, dtype=np.int8), np.ones(count, dtype=np.int8)))
    order = np.lexsort((flag, keys_t, keys_slot))
    is_query = order >= count
    data_before: I64 = np.cumsum(~is_query) - (~is_query)
    lo = np.empty(count, dtype=np.int64)
    lo[order[is_query] - count] = data_before[is_query]
    return lo


def _try_vector(node: n.Node, scope: Scope, boolean: bool) -> Any:
    try:
        return compile_vector(node, scope, expect=type_from_name("boolean") if boolean else None)
    except ExprError:
        return None  # not vectorizable (versions, strings): the scalar closure is used instead


def _field(batch: list[Event], name: str) -> list[Any]:
    """One field of every event (None where absent), by C-level iteration when every event has it."""
    try:
        return list(map(itemgetter(name), batch))
    except KeyError:
        return [e.get(name) for e in batch]


def _dig(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _float_or_object(values: Any) -> Any:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    return arr


def _numbers(col: Any) -> F64:
    """Float values of an object column: numbers kept, anything else missing (NaN)."""
    return np.array(
        [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in col.tolist()],
        dtype=np.float64,
    )


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return repr(value)
    return value


def _ascending_order(ranks: I64) -> I64 | None:
    """The order that sorts ``ranks`` (distinct values), or None when they already ascend."""
    if ranks.size < 2 or bool((ranks[1:] > ranks[:-1]).all()):
        return None
    return np.argsort(ranks, kind="stable").astype(np.int64)


def _row_maker(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """A function building one ``values`` dict from one value per statistic (dict displays for few statistics)."""
    if len(names) == 1:
        (a,) = names
        return lambda x: {a: x}
    if len(names) == 2:
        a, b = names
        return lambda x, y: {a: x, b: y}
    if len(names) == 3:
        a, b, c = names
        return lambda x, y, z: {a: x, b: y, c: z}
    if len(names) == 4:
        a, b, c, d = names
        return lambda x, y, z, u: {a: x, b: y, c: z, d: u}
    if len(names) == 5:
        a, b, c, d, e = names
        return lambda x, y, z, u, v: {a: x, b: y, c: z, d: u, e: v}
    if len(names) == 6:
        a, b, c, d, e, f = names
        return lambda x, y, z, u, v, w: {a: x, b: y, c: z, d: u, e: v, f: w}
    return lambda *values: dict(zip(names, values, strict=True))


def _plain(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _plain_list(values: Any) -> list[Any]:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        out: list[Any] = arr.tolist()
        if np.isnan(arr).any():
            out = [None if math.isnan(v) else v for v in out]
        return out
    if arr.dtype.kind in "iub":
        ints: list[Any] = arr.astype(np.int64, copy=False).tolist()
        return ints
    return [_plain(v) for v in arr.tolist()]
