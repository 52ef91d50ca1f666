"""Enforce the coverage floors in pyproject.toml [tool.coverage_gates] on a coverage.py JSON report.

In: the path of ``coverage json`` output. Out: exit 0 when every floor holds, else 1 with each shortfall listed.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def main(report_path: str) -> int:
    root = Path(__file__).resolve().parent.parent
    gates = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["coverage_gates"]
    report = json.loads(Path(report_path).read_text())
    failures = []
    total = report["totals"]["percent_covered"]
    line_total = 100.0 * report["totals"]["covered_lines"] / max(report["totals"]["num_statements"], 1)
    if line_total < gates["total_lines"]:
        failures.append(f"package line coverage {line_total:.2f}% < {gates['total_lines']}%")
    files = report["files"]
    for pattern, floor in sorted(gates.get("modules", {}).items()):
        matched = [name for name in files if Path(name).as_posix().endswith(pattern) or pattern in Path(name).as_posix()]
        if not matched:
            failures.append(f"{pattern}: no such module in the report (gate {floor}%)")
            continue
        for name in matched:
            summary = files[name]["summary"]
            covered = summary["percent_covered"]  # lines and branches together (branch coverage is on)
            if covered < floor:
                failures.append(f"{name}: {covered:.2f}% (lines+branches) < {floor}%")
    print(f"coverage: package lines {line_total:.2f}%, lines+branches {total:.2f}%")
    for failure in failures:
        print(f"coverage gate failed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "coverage.json"))
