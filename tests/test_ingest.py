"""Ingestion (issue 3): decoding, normalisation, de-duplication, event time, future clocks, checksums, counters."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from iot_dsl import CompileError, DslErrors, Engine, compile_text
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.clock import VirtualClock, format_time
from iot_dsl.runtime.ingest import FUTURE_KEY, decode_lines
from iot_dsl.runtime.ingest_rules import ChecksumVerifier, checksum_of
from iot_dsl.runtime.ingest_state import DedupTable, IngestCounters
from iot_dsl.runtime.operators import TIME_KEY

from .conftest import compile_yaml

T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def stream_plan(extra: str = "", rest: str = "") -> Any:
    """A workflow with one source stream ``s`` (plus ``extra`` keys) whose events all raise an alert."""
    return compile_yaml(
        f"""
        workflow: w
        streams:
          s:
            key: device
            time: ts
            fields: {{temp: number}}
{_indent(extra, 12)}
        rules:
          - {{name: r, when: s, do: [{{alert: "{{device}} {{temp}}"}}]}}
{rest}
        """
    )


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.strip().splitlines()) if text.strip() else ""


def ev(device: str = "d1", ts: float = T0, seq: int | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device, "ts": ts, **fields}
    if seq is not None:
        out["seq"] = seq
    return out


def lines(*events: Any) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def kinds(records: list[dict[str, Any]]) -> list[str]:
    return [r["kind"] for r in records]


def alerts(records: list[dict[str, Any]]) -> list[str]:
    return [r["message"] for r in records if r["kind"] == "alert" and r["node"] == "r"]


# ----------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"device": "d1", "ts": 1767225600', "truncated JSON (unexpected end of data"),
        (b'{"device": "d1" "ts": 1}', "invalid JSON ("),
        (b"\xff\xfe{}", "invalid UTF-8 ("),
        (b"", "empty input"),
        (b"   ", "empty input"),
        (12, "cannot decode a int (expected bytes or str)"),
    ],
)
def test_undecodable_lines_become_dead_letters_and_the_batch_goes_on(line: Any, reason: str) -> None:
    engine = Engine(stream_plan())
    records = engine.push_raw([orjson.dumps(ev(temp=1)), line, orjson.dumps(ev("d2", temp=2))])
    dead = [r for r in records if r["kind"] == "dead_letter"]
    assert len(dead) == 1 and dead[0]["reason"].startswith(reason) and dead[0]["line"] == 1
    assert dead[0]["node"] == "ingest"
    assert alerts(records) == ["d1 1", "d2 2"]
    assert engine.stats.events_in == 3 and engine.stats.dead_letters == 1 and engine.stats.reconciles()


def test_decode_keeps_the_text_of_a_bad_line_and_accepts_str_lines() -> None:
    events, bad = decode_lines(['{"a": 1}', '{"a": ', b'{"b": 2}', b'{"c": \xff}'], T0)
    assert events == [{"a": 1}, {"b": 2}]
    assert [(r["line"], r["event"]) for r in bad] == [(1, '{"a": '), (3, '{"c": \ufffd}')]
    assert bad[0]["at"] == format_time(T0)


def test_non_object_json_and_malformed_events_are_dead_letters_with_the_spine_messages() -> None:
    engine = Engine(stream_plan())
    records = engine.push_raw(
        lines([1, 2], ev(device=""), {"ts": T0}, ev(ts=None), ev(ts=True), ev(ts="soon"), ev(temp="hot"), ev(temp=3))
    )
    reasons = [r["reason"] for r in records if r["kind"] == "dead_letter"]
    assert reasons == [
        "event is not a JSON object",
        "missing or invalid device key 'device'",
        "missing or invalid device key 'device'",
        "missing event time 'ts'",
        "invalid event time 'ts': True",
        "invalid event time 'ts': 'soon'",
        "field 'temp' should be number, got str",
    ]
    assert alerts(records) == ["d1 3"]
    assert engine.stats.reconciles() and engine.stats.dead_letters == 7 and engine.stats.processed == 1


def test_times_in_every_format_and_integer_fields_are_read_on_the_batch_path() -> None:
    plan = stream_plan(rest="        ")
    engine = Engine(plan)
    records = engine.push_raw(lines(ev(ts=T0), ev(ts=int(T0 * 1000) + 250), ev(ts="2026-01-01T00:00:01Z")))
    assert [r["at"] for r in records if r["kind"] == "alert"] == [
        "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.250Z", "2026-01-01T00:00:01.000Z"
    ]
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {n: integer, ok: boolean, label: string}}
        rules:
          - {name: r, when: s, do: [{alert: "{n}"}]}
        """
    )
    records = Engine(plan).push(
        [ev(n=2.0), ev(n=2.5), ev(ok="yes"), ev(label=3), ev(n=True), ev(n=7, ok=False, label="x"), ev(ts=float("nan"))]
    )
    assert [r.get("reason", r.get("message")) for r in records] == [
        "invalid event time 'ts': nan",  # shape is checked first, then declared types
        "field 'n' should be integer, got float",
        "field 'ok' should be boolean, got str",
        "field 'label' should be string, got int",
        "field 'n' should be integer, got bool",
        "2.0",
        "7",
    ]


def test_pushed_dicts_are_not_changed_and_registry_envelope_fields_are_filled() -> None:
    registry = DeviceRegistry([Device("d1", "boiler", "north", "line-1", 0.0, 0.0, "1.0", {})])
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts}
        rules:
          - {name: r, when: s, do: [{alert: "{type} {site} {group}"}]}
        """
    )
    mine = [ev(), ev(site="south"), ev("d2")]
    records = Engine(plan, registry=registry).push(mine)
    assert alerts(records) == ["boiler north line-1", "boiler south line-1", "{type} {site} {group}"]
    assert mine == [ev(), ev(site="south"), ev("d2")]  # the caller's dicts are untouched
    assert alerts(Engine(plan, registry=registry).push([ev(site="x")])) == ["boiler x line-1"]
    registry.update("d1", site="east")
    engine = Engine(plan, registry=registry)
    assert alerts(engine.push_raw(lines(ev()))) == ["boiler east line-1"]


def test_events_naming_streams_and_multi_stream_batches_are_routed_one_by_one() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          a: {key: device, time: ts}
          b: {key: device, time: ts}
        rules:
          - {name: r, when: a, do: [{alert: "a {device}"}]}
          - {name: q, when: b, do: [{alert: "b {device}"}]}
        """
    )
    engine = Engine(plan)
    records = engine.push_raw(lines({**ev(), "stream": "a"}, {**ev("d2"), "stream": "b"}, ev("d3")))
    assert [r.get("message") or r["reason"] for r in records] == [
        "event names no stream (streams: a, b)", "a d1", "b d2"
    ]
    assert engine.stats.as_dict()["dead_letters"] == 1 and engine.stats.reconciles()
    single = Engine(stream_plan())
    assert alerts(single.push([{**ev(temp=1), "stream": "s"}, {**ev(temp=2), "stream": "t"}])) == ["d1 1"]
    assert single.stats.dead_letters == 1 and single.stats.reconciles()


# ------------------------------------------------------------------------------------------ normalisation
MIXED = """
        workflow: w
        streams:
          s:
            key: device
            time: ts
            fields: {temp: number, pressure: number}
            normalize:
              - when: "device.firmware < '2.0'"
                rename: {temperature: temp}
                units: {temp: F_to_C}
              - when: "pressure < 1"
                scale: {pressure: {factor: 10, offset: 0}}
                units: {pressure: kPa_to_bar}
              - scale: {pressure: {factor: 2}}
        rules:
          - {name: r, when: s, do: [{alert: "{device} {temp} {pressure}"}]}
"""


def fleet() -> DeviceRegistry:
    return DeviceRegistry(
        [
            Device("old", "boiler", "n", "n", 0.0, 0.0, "1.5.0", {}),
            Device("new", "boiler", "n", "n", 0.0, 0.0, "2.1.0", {}),
        ]
    )


def test_normalisation_renames_scales_and_converts_per_firmware_and_per_event() -> None:
    registry = fleet()
    engine = Engine(compile_yaml(MIXED), registry=registry)
    records = engine.push_raw(
        lines(
            ev("old", temperature=212.0, pressure=1.0),
            ev("new", temp=100.0, pressure=1.0),
            ev("new", temp=10.0, pressure=0.5),
            ev("ghost", temp=5.0, pressure=1.0),  # unknown device: the firmware rule does not apply
        )
    )
    assert alerts(records) == ["old 100.0 2.0", "new 100.0 2.0", "new 10.0 0.1", "ghost 5.0 2.0"]
    registry.update("new", firmware="1.9.0")  # a downgrade: the cached per-device decision follows the registry
    assert alerts(engine.push_raw(lines(ev("new", temperature=32.0, pressure=0.0)))) == ["new 0.0 0.0"]


def test_values_that_cannot_be_normalised_are_dead_letters() -> None:
    engine = Engine(compile_yaml(MIXED), registry=fleet())
    records = engine.push(
        [
            ev("old", temperature="hot", pressure=1.0),  # the firmware rule converts temp: not a number
            ev("new", temp=1.0, pressure=None),  # null is left alone (pressure < 1 is false for null)
            ev("new", temp=1.0, pressure="low"),  # the event-level rule cannot compare text with 1
            ev("new", temp=1.0, pressure=1.0),
        ]
    )
    assert [r.get("reason") or r["message"] for r in records] == [
        "cannot normalise field 'temp': expected a number, got str",
        records[1]["reason"],
        "new 1.0 None",
        "new 1.0 2.0",
    ]
    assert records[1]["reason"].startswith("cannot evaluate normalisation rule 'when': ")
    assert engine.stats.dead_letters == 2 and engine.stats.reconciles()


def test_a_when_that_fails_at_run_time_is_a_dead_letter() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s:
            key: device
            time: ts
            fields: {a: number, b: number}
            normalize:
              - {when: "a > b", scale: {a: {factor: 2}}}
        rules:
          - {name: r, when: s, do: [{alert: "{a}"}]}
        """
    )
    records = Engine(plan).push([ev(a=1), ev(a=3, b=1)])
    assert [r.get("reason") or r["message"] for r in records] == [
        "cannot evaluate normalisation rule 'when': missing field 'b'",
        "6.0",
    ]


def test_a_device_rule_on_an_unknown_attribute_does_not_apply() -> None:
    plan = compile_yaml(
        """
        workflow: w
        devices:
          types:
            boiler: {attributes: {capacity_kw: number}}
        streams:
          s:
            key: device
            time: ts
            fields: {a: number}
            normalize:
              - {when: "device.capacity_kw > 100", scale: {a: {factor: 2}}}
        rules:
          - {name: r, when: s, do: [{alert: "{a}"}]}
        """
    )
    assert alerts(Engine(plan, registry=fleet()).push([ev("old", a=1)])) == ["1"]


# ------------------------------------------------------------------------------------------ de-duplication
DEDUP = "id: seq\ndedup: {window: 1m, max_ids: 1000}\nlateness: 5s"


def test_duplicates_are_counted_not_recorded_across_and_within_batches() -> None:
    engine = Engine(stream_plan(DEDUP))
    first = engine.push_raw(lines(ev(seq=1, temp=1), ev(seq=1, temp=1), ev("d2", seq=1, temp=2), ev(temp=9)))
    second = engine.push_raw(lines(ev(seq=1, temp=1), ev(seq=2, temp=3), ev(temp=9)))
    assert alerts(first) == ["d1 1", "d2 2", "d1 9"]  # no id: not de-duplicated
    assert alerts(second) == ["d1 3", "d1 9"]
    assert kinds(first + second) == ["alert"] * 5
    assert engine.stats.duplicates == 2 and engine.stats.processed == 5 and engine.stats.reconciles()


def test_ids_may_be_strings_and_other_id_types_are_dead_letters() -> None:
    engine = Engine(stream_plan("id: msg\ndedup: 1m"))
    records = engine.push(
        [ev(msg="a", temp=1), ev(msg="a", temp=1), ev(msg=1.5, temp=2), ev(msg=[1], temp=3), ev(msg=7, temp=4)]
    )
    assert [r.get("reason") or r["message"] for r in records] == [
        "id 'msg' should be an integer or a string, got float",
        "id 'msg' should be an integer or a string, got list",
        "d1 1",
        "d1 4",
    ]
    assert engine.stats.duplicates == 1 and engine.stats.reconciles()


def test_dedup_defaults_to_the_seq_field() -> None:
    plan = stream_plan("dedup: 30s")
    assert plan.data["segments"][0]["operators"][0]["config"]["id"] == "seq"
    engine = Engine(plan)
    assert alerts(engine.push([ev(seq=4, temp=1), ev(seq=4, temp=1)])) == ["d1 1"]


def test_dedup_table_forgets_ids_behind_the_window_and_caps_its_size() -> None:
    table = DedupTable(window=60.0, max_ids=10)
    assert table.admit([("a", 1), ("a", 2), ("a", 1)], [0.0, 1.0, 0.0]) == [False, False, True]
    table.expire(60.0)  # cutoff 0: nothing is older
    assert len(table) == 2
    table.expire(70.5)  # cutoff 10.5: less than a quarter window past the last sweep, nothing to do (amortised)
    assert len(table) == 2
    table.expire(80.0)  # cutoff 20 -> swept
    assert len(table) == 0 and table.admit([("a", 1)], [0.0]) == [False]
    flags = table.admit([("b", i) for i in range(12)], [float(i) for i in range(12)])
    assert flags == [False] * 12 and len(table) == 9 and table.evicted == 4
    assert ("a", 1) not in table.seen and ("b", 11) in table.seen  # the oldest went first
    copy = DedupTable(60.0)
    copy.restore(table.snapshot())
    assert copy.seen == table.seen and copy.cutoff == table.cutoff


def test_a_full_dedup_table_raises_one_alert_per_episode_and_counts_evictions() -> None:
    engine = Engine(stream_plan("id: seq\ndedup: {window: 1h, max_ids: 4}"))
    records = engine.push([ev(seq=i, ts=T0 + i, temp=i) for i in range(6)])
    records += engine.push([ev(seq=6, ts=T0 + 6, temp=6)])
    records += engine.push([ev(seq=i, ts=T0 + i, temp=i) for i in range(7, 20)])
    full = [r for r in records if r["kind"] == "alert" and r.get("reason") == "dedup_full"]
    # 6 ids > 4: forget down to 90% (3 kept); then 4 fit; then 17 > 4: 14 forgotten, a second episode
    assert [r["evicted"] for r in full] == [3, 14]
    assert engine.stats.dedup_evicted == 17 and engine.stats.duplicates == 0 and engine.stats.reconciles()


# -------------------------------------------------------------------------------------------- event time
LATE = "lateness: 5s\nallowed_lateness: 10s"


def test_events_behind_the_watermark_beyond_the_allowed_lateness_are_late_records() -> None:
    engine = Engine(stream_plan(LATE))
    records = engine.push_raw(
        lines(ev(ts=T0 + 100, temp=1), ev(ts=T0 + 86, temp=2), ev(ts=T0 + 84.9, temp=3), ev("d2", ts=T0 + 101, temp=4))
    )
    assert alerts(records) == ["d1 1", "d1 2", "d2 4"]  # 86 is within the allowed lateness, 84.9 is not
    (late,) = [r for r in records if r["kind"] == "late"]
    assert late["at"] == format_time(T0 + 84.9) and late["watermark"] == format_time(T0 + 95)
    assert late["behind"] == pytest.approx(10.1) and late["event"]["temp"] == 3 and TIME_KEY not in late["event"]
    assert engine.watermarks["cloud"]["s"] == T0 + 96
    assert engine.stats.late == 1 and engine.stats.reconciles()
    engine.finish()
    assert engine.watermarks["cloud"]["s"] == float("inf")


def test_lateness_is_judged_event_by_event_whatever_the_batching() -> None:
    rng = random.Random(5)
    stream = [ev(f"d{rng.randrange(3)}", ts=T0 + i + rng.uniform(-20, 20), temp=i) for i in range(300)]
    whole = Engine(stream_plan(LATE)).push(stream)
    pieces: list[dict[str, Any]] = []
    engine = Engine(stream_plan(LATE))
    start = 0
    while start < len(stream):
        size = rng.randrange(1, 40)
        pieces += engine.push(stream[start : start + size])
        start += size
    # late records come out as the source sees them, alerts after the rule: same records, batch-dependent order
    assert sorted(map(orjson.dumps, whole)) == sorted(map(orjson.dumps, pieces))
    assert any(r["kind"] == "late" for r in whole)


# -------------------------------------------------------------------------------------- clocks running ahead
def future_engine(policy: str, extra: str = "") -> Engine:
    return Engine(
        stream_plan(f"lateness: 5s\nfuture: {{tolerance: 30s, policy: {policy}}}\n{extra}"),
        clock=VirtualClock(T0 + 100),
    )


def test_clamp_pins_a_future_time_to_the_bound_flags_it_and_alerts() -> None:
    engine = future_engine("clamp")
    records = engine.push([ev("ahead", ts=T0 + 3700, temp=1), ev(ts=T0 + 99, temp=2)])
    alert = records[0]
    assert alert["reason"] == "clock_ahead" and alert["devices"] == ["ahead"] and alert["count"] == 1
    assert "ahead of the engine clock by up to 3600.000s (tolerance 30s): clamp" in alert["message"]
    assert [(r["at"], r["message"]) for r in records[1:]] == [
        (format_time(T0 + 130), "ahead 1"), (format_time(T0 + 99), "d1 2")
    ]
    # the watermark never runs ahead of the engine clock: min(T0 + 130, T0 + 100) - 5s
    assert engine.watermarks["cloud"]["s"] == T0 + 95 and engine.stats.future == 1 and engine.stats.processed == 2


def test_future_flag_travels_with_the_event() -> None:
    engine = future_engine("clamp")
    source = engine._segments["cloud"].operators[0]
    out = source.process([ev("ahead", ts=T0 + 200)], [])
    assert out[0][FUTURE_KEY] == pytest.approx(100.0) and out[0][TIME_KEY] == T0 + 130


def test_a_clock_ahead_does_not_make_other_devices_late_and_hide_their_matches() -> None:
    stream = [ev("ahead", ts=T0 + 3700, temp=1), ev("d1", ts=T0 + 95, temp=2)]
    naive = Engine(stream_plan("lateness: 5s"), clock=VirtualClock(T0 + 100)).push(stream)
    assert kinds(naive) == ["late", "alert"]  # without a future policy the runaway clock hides d1's reading
    for policy in ("clamp", "accept", "dead_letter"):
        records = future_engine(policy).push(stream)
        assert "d1 2" in alerts(records) and "late" not in kinds(records), policy


def test_accept_keeps_the_device_time_but_the_watermark_stops_at_the_bound() -> None:
    engine = future_engine("accept")
    records = engine.push([ev("ahead", ts=T0 + 3700, temp=1)])
    assert [r["at"] for r in records if r["node"] == "r"] == [format_time(T0 + 3700)]
    assert engine.watermarks["cloud"]["s"] == T0 + 95


def test_dead_letter_policy_refuses_future_events() -> None:
    engine = future_engine("dead_letter")
    records = engine.push([ev("ahead", ts=T0 + 3700, temp=1), ev(ts=T0 + 120, temp=2)])
    assert kinds(records) == ["alert", "dead_letter", "alert"]
    assert records[1]["reason"] == (
        "event time 2026-01-01T01:01:40.000Z is 3600.000s ahead of the engine clock (tolerance 30s)"
    )
    assert engine.stats.dead_letters == 1 and engine.stats.future == 1 and engine.stats.reconciles()


# ------------------------------------------------------------------------------------------------ checksums
@pytest.mark.parametrize("algorithm", ["crc32", "adler32", "sha256"])
def test_checksums_are_verified_over_the_canonical_payload(algorithm: str) -> None:
    engine = Engine(stream_plan(f"checksum: {{field: crc, algorithm: {algorithm}}}"))
    good = ev(temp=1)
    good["crc"] = checksum_of(good, "crc", algorithm)
    tampered = dict(good, temp=2)
    records = engine.push_raw([orjson.dumps(good), orjson.dumps(tampered), orjson.dumps(ev(temp=3))])
    reasons = [r["reason"] for r in records if r["kind"] == "dead_letter"]
    assert reasons[0].startswith(f"checksum mismatch: 'crc' is {good['crc']!r}, {algorithm} of the payload is ")
    assert reasons[1] == "missing checksum 'crc'"
    assert alerts(records) == ["d1 1"]


def test_crc32_may_travel_as_hex_text() -> None:
    verifier = ChecksumVerifier("crc")
    event = ev(temp=1)
    value = checksum_of(event, "crc")
    assert isinstance(value, int)
    assert verifier.failure({**event, "crc": f"{value:08x}"}) is None
    assert verifier.failure({**event, "crc": "zz"}) == "checksum 'crc' is not a number: 'zz'"
    assert verifier.failure({**event, "crc": 1.5}).startswith("checksum mismatch")
    assert ChecksumVerifier("crc", "sha256").failure({**event, "crc": 5}).startswith("checksum mismatch")
    assert verifier.failure({**event, "x": {1, 2}, "crc": 1}).startswith("cannot compute checksum:")


# ------------------------------------------------------------------------------------- counters and restore
FULL = """
id: seq
dedup: {window: 2m, max_ids: 100000}
lateness: 5s
allowed_lateness: 10s
future: {tolerance: 30s, policy: dead_letter}
"""


def noisy_stream(seed: int, n: int = 3000) -> list[Any]:
    """Disordered readings from 20 devices with duplicates, corrupt lines, late and future events."""
    rng = random.Random(seed)
    out: list[Any] = []
    sent: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        device = f"d{rng.randrange(20)}"
        t = T0 + i * 0.1 + rng.uniform(-4, 4)
        if roll < 0.03 and sent:
            out.append(rng.choice(sent[-50:]))  # redelivery
            continue
        if roll < 0.05:
            t -= 60  # far behind: late
        elif roll < 0.06:
            t += 3600  # clock ahead
        line = orjson.dumps(ev(device, ts=round(t, 3), seq=i, temp=rng.randrange(100)))
        if roll > 0.99:
            line = line[:-3]  # truncated
        sent.append(line)
        out.append(line)
    return out


def oracle(stream: list[bytes], clock: float) -> dict[str, int]:
    """Brute force, one line at a time: the dispositions the ingest semantics define."""
    counts = dict.fromkeys(["processed", "duplicates", "dead_letters", "late"], 0)
    seen: set[tuple[str, int]] = set()
    top = float("-inf")
    for line in stream:
        try:
            e = orjson.loads(line)
        except orjson.JSONDecodeError:
            counts["dead_letters"] += 1
            continue
        if e["ts"] > clock + 30:
            counts["dead_letters"] += 1
            continue
        if (e["device"], e["seq"]) in seen:
            counts["duplicates"] += 1
            continue
        seen.add((e["device"], e["seq"]))
        if e["ts"] < top - 15:
            counts["late"] += 1
            continue
        top = max(top, e["ts"])
        counts["processed"] += 1
    return counts


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_reconcile_exactly_and_equal_a_brute_force_oracle(seed: int) -> None:
    stream = noisy_stream(seed)
    clock = T0 + 400
    engine = Engine(stream_plan(FULL), clock=VirtualClock(clock))
    records: list[dict[str, Any]] = []
    for start in range(0, len(stream), 256):
        records += engine.push_raw(stream[start : start + 256])
    stats = engine.stats
    expected = oracle(stream, clock)
    assert {k: getattr(stats, k) for k in expected} == expected
    assert stats.events_in == len(stream) and stats.reconciles() and stats.shed == 0
    assert stats.records["late"] == stats.late and len(alerts(records)) == stats.processed
    assert min(expected.values()) > 0


def test_snapshot_and_restore_mid_stream_equals_an_uninterrupted_run() -> None:
    stream = noisy_stream(3)
    clock = T0 + 400
    plan = stream_plan(FULL)
    whole = Engine(plan, clock=VirtualClock(clock))
    expected = [r for start in range(0, len(stream), 300) for r in whole.push_raw(stream[start : start + 300])]
    first = Engine(plan, clock=VirtualClock(clock))
    got = [r for start in range(0, 1500, 300) for r in first.push_raw(stream[start : start + 300])]
    saved = orjson.loads(orjson.dumps(first.snapshot()))
    second = Engine(plan, clock=VirtualClock(clock))
    second.restore(saved)
    got += [r for start in range(1500, len(stream), 300) for r in second.push_raw(stream[start : start + 300])]
    assert got == expected
    assert second.watermarks["cloud"]["s"] == whole.watermarks["cloud"]["s"]


def test_a_fresh_source_has_nothing_to_snapshot_and_restores_without_dedup() -> None:
    engine = Engine(stream_plan())
    assert engine.snapshot()["operators"] == {}
    engine.restore({"operators": {"cloud": {"source:s": {"max_time": None}}}})
    assert "s" not in engine.watermarks.get("cloud", {})
    engine.restore({"operators": {"cloud": {"source:s": {"max_time": T0}}}})
    assert engine.watermarks["cloud"]["s"] == T0


def test_ingest_counters_add_and_take() -> None:
    total = IngestCounters()
    part = IngestCounters(received=3, processed=2, late=1)
    total.add(part)
    taken = part.take()
    assert taken == IngestCounters(received=3, processed=2, late=1) and part == IngestCounters()
    assert total.processed == 2


def test_edge_segments_count_their_ingest_too() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, id: seq, dedup: 1m}
        rules:
          - {name: r, when: s, do: [{alert: "{device}"}]}
        edge:
          gateways:
            gw: {devices: "site == 'n'"}
        """
    )
    registry = DeviceRegistry([Device("d1", "t", "n", "n", 0.0, 0.0, "1.0", {})])
    engine = Engine(plan, registry=registry)
    records = engine.push_raw(lines(ev(seq=1), ev(seq=1), ev("d9", seq=1, site="x"), [3]))
    assert kinds(records) == ["dead_letter", "dead_letter", "alert"]
    stats = engine.stats
    assert (stats.processed, stats.duplicates, stats.dead_letters, stats.events_in) == (1, 1, 2, 4)
    gateway_only = Engine(plan, registry=registry, segment="cloud")
    gateway_only.push_raw(lines(ev(seq=1)))
    assert gateway_only.stats.events_in == 0  # that event belongs to the gateway's process


# ----------------------------------------------------------------------------------------------- compiling
def test_compile_errors_for_ingestion_settings() -> None:
    with pytest.raises(DslErrors) as caught:
        compile_text(
            """workflow: w
streams:
  s:
    key: device
    time: ts
    critical: true
    fields: {label: string, temp: number}
    queue: {max_events: 10, on_full: shed}
    normalize:
      - when: "temp + 1"
        scale: {label: {factor: 2}}
        units: {label: F_to_C}
""",
            "w.yaml",
        )
    messages = sorted(str(e.message) for e in caught.value.errors)
    assert messages == [
        "a critical stream cannot shed: use on_full: backpressure, or drop critical: true",
        "cannot convert field 'label': it is string, not a number",
        "cannot scale field 'label': it is string, not a number",
        messages[3],
    ]
    assert "bool" in messages[3]
    assert sum(isinstance(e, CompileError) for e in caught.value.errors) == 3


def test_schema_refuses_unknown_ingestion_keys_and_values() -> None:
    with pytest.raises(DslErrors) as caught:
        compile_text(
            """workflow: w
streams:
  s:
    dedup: {window: 1m, max: 3}
    future: {tolerance: 1s, policy: ignore}
    checksum: {field: crc, algorithm: md5}
    queue: {on_full: drop}
    normalize: [{units: {temp: F_to_K}}]
""",
            "w.yaml",
        )
    assert len(caught.value.errors) == 5


def test_rename_targets_are_fields_of_the_stream() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s:
            key: device
            time: ts
            fields: {temperature: number}
            normalize:
              - {rename: {temp_f: temp}}
          hot: {from: s, where: "temp > 1 and temperature > 1"}
        """
    )
    source = plan.data["segments"][0]["operators"][0]
    assert source["fields"]["temp"] == "any" and source["config"]["raw_fields"]["temp_f"] == "any"


def test_a_batch_refused_stage_by_stage_ends_empty_and_is_counted() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s:
            key: device
            time: ts
            id: seq
            dedup: 1m
            fields: {temp: number}
            checksum: {field: crc}
            future: {tolerance: 1s}
            normalize: [{scale: {temp: {factor: 2}}}]
        rules:
          - {name: r, when: s, do: [{alert: "{temp}"}]}
        """
    )
    engine = Engine(plan)
    records = engine.push([ev(temp=1, crc=1), ev("d2", temp=2)])
    assert kinds(records) == ["dead_letter", "dead_letter"] and engine.stats.reconciles()
    good = ev(ts=int(T0 * 1000), seq=1, temp=1)  # epoch milliseconds on the batch path
    good["crc"] = checksum_of(good, "crc")
    engine = Engine(plan, clock=VirtualClock(T0))
    assert [(r["at"], r["message"]) for r in engine.push_raw([orjson.dumps(good)] * 2)] == [
        (format_time(T0), "2.0")
    ]
    assert engine.stats.duplicates == 1


def test_a_device_seen_twice_in_a_batch_is_asked_about_once() -> None:
    calls: list[str] = []
    registry = fleet()
    original = registry.attributes

    def counting(device: str) -> Any:
        calls.append(device)
        return original(device)

    registry.attributes = counting  # type: ignore[method-assign]
    plan = compile_yaml(MIXED)
    engine = Engine(plan, registry=registry)
    records = engine.push([ev("old", temperature=50.0, pressure=1.0), ev("old", temperature=50.0, pressure=1.0)])
    assert alerts(records) == ["old 10.0 2.0", "old 10.0 2.0"]
    assert calls.count("old") == 2  # once for the firmware rule, once for the envelope fields


def test_consecutive_evicting_batches_stay_in_one_alert_episode() -> None:
    engine = Engine(stream_plan("id: seq\ndedup: {window: 1h, max_ids: 2}"))
    records = engine.push([ev(seq=i, ts=T0 + i, temp=i) for i in range(4)])
    records += engine.push([ev(seq=i, ts=T0 + i, temp=i) for i in range(4, 8)])
    assert sum(r.get("reason") == "dedup_full" for r in records) == 1
    assert engine.stats.dedup_evicted == 3 + 4  # 4 ids -> 1 kept (90% of 2, at least 1), then 5 -> 1


def test_the_source_operator_refuses_non_objects_handed_to_it_directly() -> None:
    engine = Engine(stream_plan())
    source = engine._segments["cloud"].operators[0]
    records: list[dict[str, Any]] = []
    assert source.process([[1, 2], ev(temp=1)], records) == [{**ev(temp=1), TIME_KEY: T0}]
    assert [r["reason"] for r in records] == ["event is not a JSON object"]


def test_a_stream_without_dedup_snapshots_its_high_water_mark_only() -> None:
    engine = Engine(stream_plan(LATE))
    engine.push([ev(ts=T0 + 7, temp=1)])
    assert engine.snapshot()["operators"] == {"cloud": {"source:s": {"max_time": T0 + 7}}}


def test_per_device_decisions_are_cached_across_batches() -> None:
    engine = Engine(compile_yaml(MIXED), registry=fleet())
    assert alerts(engine.push([ev("old", temperature=32.0, pressure=1.0)])) == ["old 0.0 2.0"]
    # cached "old", new "new"; an old-firmware device already sending temp in C is left alone by the rename
    records = engine.push([ev("old", temp=32.0, pressure=1.0), ev("new", temp=3.0, pressure=1.0)])
    assert alerts(records) == ["old 0.0 2.0", "new 3.0 2.0"]
    assert alerts(engine.push([ev("new", temp=4.0, pressure=1.0)])) == ["new 4.0 2.0"]


def test_a_batch_of_many_redeliveries_keeps_each_original_once_in_order() -> None:
    engine = Engine(stream_plan(DEDUP))
    originals = [ev(seq=i, ts=T0 + i, temp=i) for i in range(40)]
    records = engine.push_raw(lines(*originals, *originals, ev(seq=99, ts=T0 + 50, temp=99)))
    assert alerts(records) == [f"d1 {i}" for i in [*range(40), 99]]
    assert engine.stats.duplicates == 40 and engine.stats.processed == 41 and engine.stats.reconciles()
