"""Anomaly detection: aggregate events (one per closed window and group) in, ``anomaly`` records and events out.

Each detector watches one computed value (``on``) of an aggregate, per series (level, group, device):

* ``zscore`` -- ``(x - mean) / std`` of the last ``baseline`` windows of the series (sample std);
* ``mad`` -- ``(x - median) / (1.4826 * MAD)`` over the last ``baseline`` windows (robust to outliers);
* ``ewma`` -- an EWMA control chart: ``z = alpha*x + (1-alpha)*z_prev`` against the series' running mean
  ``mu`` and std ``sigma``; score ``(z - mu) / (sigma * sqrt(alpha / (2 - alpha)))``, limit ``limits``;
* ``peer`` -- a device against the other devices of its group in the same window:
  ``(x - median) / (1.4826 * MAD)`` over the group's device values (device-level aggregates only).

A score beyond the threshold (in absolute value) is an anomaly. Every detector has a warm-up: no anomaly is
reported before the series has seen ``warmup`` windows (``peer``: before the group has ``min_peers`` devices
in the window). An anomalous value does not enter its series' baseline, so a lasting shift keeps being reported.
When the MAD is 0 the mean absolute deviation (x 1.2533) stands in; when that is 0 too, any difference from the
baseline scores infinity. Revised aggregates (``revision`` > 0) are not re-examined. Windows are examined in
order of their end; the vector maths runs over all series of one window end at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .clock import format_time
from .groups import DEVICE_LEVEL
from .operators import TIME_KEY, BuildContext, Operator
from .records import Record, make_record
from .telemetry_stats import Segments, StatSpec, compute_stats, segments_from_ids

__all__ = ["DEFAULTS", "AnomalyOperator", "Detector", "robust_scores"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Event = dict[str, Any]

#: default parameters per method
DEFAULTS: dict[str, dict[str, Any]] = {
    "zscore": {"threshold": 3.0, "baseline": 30},
    "mad": {"threshold": 3.5, "baseline": 30},
    "ewma": {"alpha": 0.3, "limits": 3.0, "warmup": 20},
    "peer": {"threshold": 3.5, "min_peers": 5, "warmup": 0},
}
_MAD_SCALE = 1.4826
_MEAN_AD_SCALE = 1.2533


def _scores(diff: F64, spread: F64) -> F64:
    """diff / spread, with a zero spread giving 0 for no difference and +-inf otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(spread > 0, diff / np.where(spread > 0, spread, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    return np.asarray(out, dtype=np.float64)


def robust_scores(values: F64, center: F64, mad: F64, mean_ad: F64) -> F64:
    """Robust z-scores: ``(x - median) / (1.4826 * MAD)``, the mean absolute deviation standing in for a zero MAD."""
    spread = np.where(mad > 0, _MAD_SCALE * mad, _MEAN_AD_SCALE * mean_ad)
    return _scores(values - center, spread)


@dataclass
class Detector:
    """One configured detector and its per-series state."""

    name: str
    method: str
    on: str
    threshold: float
    baseline: int
    warmup: int
    alpha: float
    level: str | None
    min_peers: int

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> Detector:
        """Fill in the method's defaults."""
        method = str(raw["method"])
        defaults = DEFAULTS[method]
        baseline = int(raw.get("baseline", defaults.get("baseline", 30)))
        threshold = raw.get("limits", raw.get("threshold")) if method == "ewma" else raw.get("threshold")
        return cls(
            name=str(raw.get("name") or f"{method}:{raw.get('on')}"),
            method=method,
            on=str(raw.get("on")),
            threshold=float(threshold if threshold is not None else defaults.get("threshold", defaults.get("limits", 3.0))),
            baseline=baseline,
            warmup=int(raw.get("warmup", defaults.get("warmup", baseline))),
            alpha=float(raw.get("alpha", defaults.get("alpha", 0.3))),
            level=str(raw["level"]) if raw.get("level") else (DEVICE_LEVEL if method == "peer" else None),
            min_peers=int(raw.get("min_peers", defaults.get("min_peers", 5))),
        )

    def __post_init__(self) -> None:
        self.index: dict[tuple[Any, ...], int] = {}
        self.seen = np.zeros(0, dtype=np.int64)
        self.ring = np.zeros((0, max(self.baseline, 1)))
        self.position = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros(0)  # ewma: running mean / M2 of baseline values, and the chart statistic
        self.m2 = np.zeros(0)
        self.count = np.zeros(0, dtype=np.int64)
        self.chart = np.zeros(0)

    def series(self, keys: Sequence[tuple[Any, ...]]) -> I64:
        """Indices of these series (new series get fresh state)."""
        index = self.index
        out = []
        for key in keys:
            found = index.get(key)
            if found is None:
                found = index[key] = len(index)
            out.append(found)
        grow = len(index) - self.seen.size
        if grow > 0:
            self.seen = np.concatenate((self.seen, np.zeros(grow, dtype=np.int64)))
            self.ring = np.concatenate((self.ring, np.full((grow, self.ring.shape[1]), np.nan)))
            self.position = np.concatenate((self.position, np.zeros(grow, dtype=np.int64)))
            self.mean = np.concatenate((self.mean, np.zeros(grow)))
            self.m2 = np.concatenate((self.m2, np.zeros(grow)))
            self.count = np.concatenate((self.count, np.zeros(grow, dtype=np.int64)))
            self.chart = np.concatenate((self.chart, np.full(grow, np.nan)))
        return np.asarray(out, dtype=np.int64)

    def examine(self, ids: I64, x: F64, groups: Sequence[Any]) -> tuple[Any, F64, F64]:
        """For one window end: (anomalous mask, scores, baselines) of series ``ids`` with values ``x``."""
        if self.method == "peer":
            return self._peer(ids, x, groups)
        if self.method == "ewma":
            return self._ewma(ids, x)
        buf = self.ring[ids]
        present = ~np.isnan(buf)
        filled = present.sum(axis=1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing rows: their result is NaN, as wanted
            if self.method == "zscore":
                center = np.where(present, buf, 0.0).sum(axis=1) / filled
                squares = np.where(present, (buf - center[:, None]) ** 2, 0.0).sum(axis=1)
                spread = np.where(filled > 1, np.sqrt(squares / np.maximum(filled - 1, 1)), np.nan)
                scores = _scores(x - center, spread)
            else:
                center = np.nanmedian(buf, axis=1)
                deviation = np.abs(buf - center[:, None])
                scores = robust_scores(x, center, np.nanmedian(deviation, axis=1), np.nanmean(deviation, axis=1))
        ready = (self.seen[ids] >= self.warmup) & (filled >= 2)
        flagged = ready & (np.abs(np.nan_to_num(scores, nan=0.0)) > self.threshold)
        self.seen[ids] += 1
        update = ~flagged
        rows = ids[update]
        self.ring[rows, self.position[rows]] = x[update]
        self.position[rows] = (self.position[rows] + 1) % self.ring.shape[1]
        return flagged, scores, center

    def _ewma(self, ids: I64, x: F64) -> tuple[Any, F64, F64]:
        alpha = self.alpha
        count = self.count[ids]
        mu = self.mean[ids]
        sigma = np.sqrt(np.where(count > 1, self.m2[ids] / np.maximum(count - 1, 1), 0.0))
        previous = np.where(np.isnan(self.chart[ids]), mu, self.chart[ids])
        chart = alpha * x + (1 - alpha) * previous
        scores = _scores(chart - mu, sigma * math.sqrt(alpha / (2 - alpha)))
        ready = (self.seen[ids] >= self.warmup) & (count >= 2)
        flagged = ready & (np.abs(scores) > self.threshold)
        self.seen[ids] += 1
        # the chart statistic starts once warm; before that only the baseline is learned
        self.chart[ids] = np.where(ready, chart, np.nan)
        update = ~flagged
        rows, values = ids[update], x[update]
        n = self.count[rows] + 1
        delta = values - self.mean[rows]
        self.mean[rows] += delta / n
        self.m2[rows] += delta * (values - self.mean[rows])
        self.count[rows] = n
        return flagged, scores, mu

    def _peer(self, ids: I64, x: F64, groups: Sequence[Any]) -> tuple[Any, F64, F64]:
        codes: dict[Any, int] = {}
        group_ids = np.asarray([codes.setdefault(g, len(codes)) for g in groups], dtype=np.int64)
        order, starts, counts = segments_from_ids(group_ids)
        seg = Segments(starts, counts, np.zeros(x.size), {"x": x[order]})
        center_seg = compute_stats([StatSpec("m", "median", "x", 0.5), StatSpec("n", "count", "x")], seg)
        per_row = np.empty(x.size, dtype=np.int64)
        per_row[order] = np.repeat(np.arange(starts.size), counts)
        center = center_seg["m"][per_row]
        deviation = np.abs(x - center)
        dev_seg = Segments(starts, counts, np.zeros(x.size), {"d": deviation[order]})
        spread = compute_stats([StatSpec("mad", "median", "d", 0.5), StatSpec("mean", "mean", "d")], dev_seg)
        scores = robust_scores(x, center, spread["mad"][per_row], spread["mean"][per_row])
        peers = center_seg["n"][per_row]
        ready = (peers >= self.min_peers) & (self.seen[ids] >= self.warmup)
        flagged = ready & (np.abs(np.nan_to_num(scores, nan=0.0)) > self.threshold)
        self.seen[ids] += 1
        return flagged, scores, center

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state."""
        keys = sorted(self.index.items(), key=lambda kv: kv[1])
        return {
            "keys": [list(k) for k, _ in keys],
            "seen": self.seen.tolist(),
            "ring": [[None if math.isnan(v) else v for v in row] for row in self.ring.tolist()],
            "position": self.position.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "count": self.count.tolist(),
            "chart": [None if math.isnan(v) else v for v in self.chart.tolist()],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`snapshot`."""
        self.index = {tuple(k): i for i, k in enumerate(state["keys"])}
        self.seen = np.asarray(state["seen"], dtype=np.int64)
        self.ring = np.array(state["ring"], dtype=np.float64).reshape(len(self.index), self.ring.shape[1])
        self.position = np.asarray(state["position"], dtype=np.int64)
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.m2 = np.asarray(state["m2"], dtype=np.float64)
        self.count = np.asarray(state["count"], dtype=np.int64)
        self.chart = np.array(state["chart"], dtype=np.float64)


class AnomalyOperator(Operator):
    """Run an aggregate's detectors over its aggregate events; emit ``anomaly`` records and events."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        self.key = key
        self.aggregate = str(config["aggregate"])
        self.detectors = [Detector.from_config(raw) for raw in config["anomalies"]]
        self.history = None
        if config.get("history"):
            from ..storage.history import history_for

            self.history = history_for(ctx.store)

    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Examine the batch's aggregates, window end by window end; pass anomaly events on."""
        fresh = [e for e in batch if not e.get("revision")]
        if not fresh:
            return []
        ends = sorted({float(e[TIME_KEY]) for e in fresh})
        produced: list[Record] = []
        events: list[Event] = []
        for end in ends:
            window = [e for e in fresh if float(e[TIME_KEY]) == end]
            for detector in self.detectors:
                self._run(detector, window, produced, events)
        records.extend(produced)
        if self.history is not None:
            self.history.write(produced)
        return events

    def _run(self, detector: Detector, window: list[Event], produced: list[Record], events: list[Event]) -> None:
        chosen = [e for e in window if (detector.level is None or e.get("level") == detector.level)]
        if detector.method == "peer":
            chosen = [e for e in chosen if e.get("group") is not None]
        values = np.array([_number(e.get(detector.on)) for e in chosen], dtype=np.float64)
        present = ~np.isnan(values)
        if not present.any():
            return
        chosen = [e for e, ok in zip(chosen, present.tolist(), strict=True) if ok]
        values = values[present]
        keys = [(e.get("level"), e.get("group"), e.get(self.key)) for e in chosen]
        ids = detector.series([(e.get("level"), e.get("group")) for e in chosen] if detector.method == "peer" else keys)
        flagged, scores, baselines = detector.examine(ids, values, [e.get("group") for e in chosen])
        for i in np.flatnonzero(flagged).tolist():
            event = chosen[i]
            score = float(scores[i])
            fields = {
                "aggregate": self.aggregate,
                "anomaly": detector.name,
                "method": detector.method,
                "metric": detector.on,
                "value": float(values[i]),
                "score": score if math.isfinite(score) else (1e308 if score > 0 else -1e308),
                "baseline": None if baselines[i] != baselines[i] else float(baselines[i]),
                "threshold": detector.threshold,
                "level": event.get("level"),
                "group": event.get("group"),
                "device": event.get(self.key),
                "window_start": event["window_start"],
                "window_end": event["window_end"],
            }
            produced.append(
                make_record("anomaly", event[TIME_KEY], self.name, start=format_time(event["window_start"]),
                            end=format_time(event["window_end"]), segment=self.segment, **fields)
            )
            out = dict(fields)
            out[TIME_KEY] = event[TIME_KEY]
            out[self.key] = event.get(self.key)
            events.append(out)

    def snapshot(self) -> Any:
        """Every detector's per-series state."""
        return {d.name: d.snapshot() for d in self.detectors}

    def restore(self, state: Any) -> None:
        """Take back :meth:`snapshot`."""
        for detector in self.detectors:
            if detector.name in state:
                detector.restore(state[detector.name])


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)
