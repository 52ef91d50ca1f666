"""How fast hostile workflow files are refused, against compiling a normal workflow, in the same run.

Measures ``iot_dsl.compile_file`` on generated hostile inputs (written to a temporary directory): a ~300-byte YAML
alias bomb ("billion laughs", 9 levels of 9), a ``!!python/object/apply:os.system`` tag, duplicate keys, a 50 MB
file, 1,000-deep nesting (flow lists, flow mappings, block mappings), and workflows whose rule condition is a
sandbox-escape expression (``().__class__.__bases__[0].__subclasses__()``, which fails to parse, the parseable
``flow.__class__.__bases__``, ``__import__('os')``, ``9**9**9**9``).

Each input must be refused with an :class:`iot_dsl.DslError` (a single error or a ``DslErrors`` collection)
carrying the expected code; the expressions must be refused at compile time as :class:`iot_dsl.ExprError`. For
each, the best and median of 5 rounds are timed. The baseline is compiling the real example
``workflows/plant.yaml``, a normal valid workflow. The acceptance criterion is "refused in well under a second";
``refusal_vs_valid_compile_max`` (worst hostile median / valid compile median, lower is better) shows a refusal
costs no more than an ordinary compile.

Prints one JSON object as its last line: ``{"benchmark": ..., "metrics": {...}, "ratios": {...}}``.
Exits 1 if any input is not refused with the expected code (or the valid workflow fails to compile).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import iot_dsl

NAME = "hostile_inputs"
ROOT = Path(__file__).resolve().parent.parent
VALID_WORKFLOW = ROOT / "workflows" / "plant.yaml"
ROUNDS = 5
DEPTH = 1000
BIG_BYTES = 50 * 1024 * 1024

# A small valid workflow; the sandbox-escape expressions go into its rule condition.
EXPR_WORKFLOW = """\
workflow: hostile
devices:
  types:
    pump:
      telemetry: {{flow: number}}
      commands:
        stop: {{payload: {{cmd: stop}}}}
streams:
  telemetry:
    topic: plant/+/telemetry
    device_type: pump
rules:
  - name: escape
    when: telemetry
    if: {condition}
    do:
      - command: stop
"""


@dataclass(frozen=True)
class Hostile:
    """One hostile input: how to write it, and the refusal expected."""

    name: str
    code: str
    write: Callable[[Path], None]
    error_class: type[iot_dsl.DslError] = iot_dsl.DslError


@dataclass(frozen=True)
class Timing:
    best: float
    median: float


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level's list holds ``width`` aliases of the previous level (9**9 values expanded)."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"{names[0]}: &{names[0]} [{','.join(['lol'] * width)}]"]
    for level in range(1, levels):
        alias = f"*{names[level - 1]}"
        lines.append(f"{names[level]}: &{names[level]} [{','.join([alias] * width)}]")
    return "\n".join(lines) + "\n"


def write_text(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    return write


def write_big_file(path: Path) -> None:
    """A 50 MB file: a valid start, then comment lines (refused on its size before any parsing)."""
    line = b"# " + b"x" * 1021 + b"\n"  # 1 KiB
    head = b"workflow: big\n"
    with path.open("wb") as out:
        out.write(head)
        out.write(line * ((BIG_BYTES - len(head)) // len(line)))
        out.write(b"#" * (BIG_BYTES - out.tell() - 1) + b"\n")


def expression_workflow(condition: str) -> Callable[[Path], None]:
    return write_text(EXPR_WORKFLOW.format(condition=json.dumps(condition)))  # JSON strings are YAML scalars


def deep_block_mapping(depth: int) -> str:
    return "workflow: deep\n" + "".join(f"{' ' * i}k{i}:\n" for i in range(depth)) + " " * depth + "leaf\n"


HOSTILE: tuple[Hostile, ...] = (
    Hostile("alias_bomb", "alias_limit", write_text(alias_bomb())),
    Hostile("python_object_tag", "unsafe_tag", write_text('workflow: !!python/object/apply:os.system ["echo hi"]\n')),
    Hostile("duplicate_keys", "duplicate_key", write_text("workflow: first\nversion: '1'\nworkflow: second\n")),
    Hostile("file_50mb", "too_large", write_big_file),
    Hostile("deep_flow_list", "too_deep", write_text("workflow: deep\nrules: " + "[" * DEPTH + "]" * DEPTH + "\n")),
    Hostile(
        "deep_flow_mapping",
        "too_deep",
        write_text("workflow: deep\nstreams: " + "{a: " * DEPTH + "x" + "}" * DEPTH + "\n"),
    ),
    Hostile("deep_block_mapping", "too_deep", write_text(deep_block_mapping(DEPTH))),
    # the grammar has no empty tuple, no subscripts and no calls on values: this fails to parse at '()'
    Hostile(
        "expr_subclasses_escape",
        "syntax",
        expression_workflow("().__class__.__bases__[0].__subclasses__()"),
        iot_dsl.ExprError,
    ),
    # the same escape in a form that parses: refused on the '_' names
    Hostile("expr_dunder_attribute", "refused", expression_workflow("flow.__class__.__bases__"), iot_dsl.ExprError),
    Hostile("expr_import_os", "refused", expression_workflow("__import__('os')"), iot_dsl.ExprError),
    Hostile("expr_power_tower", "too_large", expression_workflow("9**9**9**9"), iot_dsl.ExprError),
)


def time_rounds(action: Callable[[], object]) -> Timing:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return Timing(min(samples), statistics.median(samples))


def refusal(path: Path) -> iot_dsl.DslError | None:
    """Compile ``path`` and return the error it raises (None when it compiles)."""
    try:
        iot_dsl.compile_file(path)
    except iot_dsl.DslError as error:
        return error
    return None


def matching(error: iot_dsl.DslError | None, case: Hostile) -> iot_dsl.DslError | None:
    """The error (itself, or one in a ``DslErrors`` collection) of the expected class and code, if any."""
    if error is None:
        return None
    candidates = error.errors if isinstance(error, iot_dsl.DslErrors) else [error]
    for candidate in candidates:
        if isinstance(candidate, case.error_class) and candidate.code == case.code:
            return candidate
    return None


def first_line(error: iot_dsl.DslError | None, folder: Path) -> str:
    if error is None:
        return "(not refused)"
    return error.render().splitlines()[0].replace(f"{folder}/", "")


def report(label: str, timing: Timing, note: str) -> None:
    """One human-readable line on stderr (stdout ends with the JSON result)."""
    line = f"{label:24} median {timing.median * 1000:8.3f} ms  best {timing.best * 1000:8.3f} ms  {note}"
    print(line, file=sys.stderr)


def main() -> int:
    failures: list[str] = []
    started = time.perf_counter()
    iot_dsl.compile_file(VALID_WORKFLOW)  # first compile in the process: imports, schema validator, grammar
    cold_valid = time.perf_counter() - started
    valid = time_rounds(lambda: iot_dsl.compile_file(VALID_WORKFLOW))

    inputs: dict[str, dict[str, object]] = {}
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="iot-dsl-hostile-") as tmp:
        folder = Path(tmp)
        for case in HOSTILE:
            path = folder / f"{case.name}.yaml"
            case.write(path)
            errors: list[iot_dsl.DslError | None] = []
            timing = time_rounds(lambda: errors.append(refusal(path)))
            found = [matching(error, case) for error in errors]
            ok = all(item is not None for item in found)
            if not ok:
                expected = f"{case.error_class.__name__} '{case.code}'"
                failures.append(f"{case.name}: expected {expected}, got: {first_line(errors[-1], folder)}")
            medians[case.name] = timing.median
            inputs[case.name] = {
                "median_s": timing.median,
                "best_s": timing.best,
                "refused": ok,
                "expected_code": case.code,
                "error": first_line(found[-1] or errors[-1], folder),
                "bytes": path.stat().st_size,
            }
            report(case.name, timing, f"{'ok  ' if ok else 'FAIL'} {inputs[case.name]['error']}")

    worst = max(medians.values())
    report("valid plant.yaml", valid, f"(first compile in the process: {cold_valid * 1000:.1f} ms)")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    result = {
        "benchmark": NAME,
        "metrics": {
            "rounds": ROUNDS,
            "inputs": inputs,
            "max_refusal_seconds": worst,
            "valid_compile_median_s": valid.median,
            "valid_compile_best_s": valid.best,
            "valid_compile_cold_s": cold_valid,
            "all_refused": not failures,
        },
        "ratios": {"refusal_vs_valid_compile_max": worst / valid.median},
    }
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
