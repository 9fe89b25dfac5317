#!/usr/bin/env python3
"""Writes benchmark figures into BENCHMARKS.md.

Each harness owns one section of BENCHMARKS.md, delimited by
`<!-- BEGIN name -->` and `<!-- END name -->`; this script replaces the
section's body and leaves everything else alone, so prose written by people
between sections survives.

    report.py criterion NAME GOALS_JSON   # criterion medians from target/criterion,
                                          # then any notes benches left in target/criterion/notes/*.md
    report.py section NAME FILE           # a ready-made markdown body

Every section starts with the machine, the date and the command that made it.
Standard library only.
"""

import datetime
import json
import os
import pathlib
import platform
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        if " sha_ni" in flags:
            cpu += " (SHA-NI)"
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def header(command: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"_Machine: {machine()}. Date: {now}. Command: `{command}`._\n\n"


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def criterion_rows(goals: dict) -> str:
    """Median of every benchmark under target/criterion, with its goal if any."""
    base = ROOT / "target" / "criterion"
    rows = []
    for est in sorted(p for p in base.glob("**/new/estimates.json") if "notes" not in p.parts):
        bench = est.parent.parent.relative_to(base).as_posix()
        bench_json = est.parent / "benchmark.json"
        if bench_json.exists():
            bench = json.load(open(bench_json)).get("full_id", bench)
        data = json.load(open(est))
        median = data["median"]["point_estimate"]
        lo = data["median"]["confidence_interval"]["lower_bound"]
        hi = data["median"]["confidence_interval"]["upper_bound"]
        thr = ""
        tput = est.parent / "benchmark.json"
        if tput.exists():
            t = json.load(open(tput)).get("throughput") or {}
            if "Bytes" in t:
                thr = f"{t['Bytes'] / median * 1e9 / 1e6:.0f} MB/s"
            elif "Elements" in t:
                thr = f"{t['Elements'] / median * 1e9:,.0f} /s"
        goal = goals.get(bench, "")
        verdict = ""
        if goal:
            limit = float(goal.split()[1])
            verdict = "met" if median <= limit else "**missed**"
            goal = f"≤ {limit:g} ns"
        rows.append(f"| `{bench}` | {fmt_ns(median)} | {fmt_ns(lo)} – {fmt_ns(hi)} | {thr} | {goal} | {verdict} |")
    head = "| benchmark | median | 95% CI of median | throughput | goal | |\n|---|---|---|---|---|---|\n"
    notes = "".join("\n" + n.read_text() for n in sorted((base / "notes").glob("*.md")))
    return head + "\n".join(rows) + "\n" + notes


def replace_section(name: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    DOC.write_text(text)


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 64
    kind, name = sys.argv[1], sys.argv[2]
    command = os.environ.get("BENCH_COMMAND", "(unknown)")
    if kind == "criterion":
        goals = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        replace_section(name, header(command) + criterion_rows(goals))
    elif kind == "section":
        replace_section(name, header(command) + pathlib.Path(sys.argv[3]).read_text())
    else:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main())
