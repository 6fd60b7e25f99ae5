#!/usr/bin/env python3
"""Rewrites examples/firmware/budget.toml from a scripts/firmware.sh log.

Each budget becomes the measured value plus 3%, at least 256 bytes, rounded
up to a multiple of 64 (the rule written in budget.toml), and the comment
records the measured value. Use it in the commit that changes a footprint,
and say in the commit message why a budget went up.

    bash scripts/firmware.sh > /tmp/fw.log 2>&1; python3 scripts/update-firmware-budget.py /tmp/fw.log
"""
import math
import re
import sys

BUDGET = "examples/firmware/budget.toml"


def budget(measured: int) -> int:
    margin = max(math.ceil(measured * 0.03), 256)
    return math.ceil((measured + margin) / 64) * 64


def main() -> None:
    measured = {}
    for line in open(sys.argv[1]):
        m = re.match(r"^(\S+)\.(stack|text|ram|future)\s+(\d+)\s+\d+\s+[+-]\d+$", line.strip())
        if m:
            measured[(m.group(1), m.group(2))] = int(m.group(3))
    if not measured:
        sys.exit("no measured values in the log (did scripts/firmware.sh reach its budget check?)")
    out, section = [], None
    for line in open(BUDGET):
        header = re.match(r"^\[(.+)\]$", line.strip())
        if header:
            section = header.group(1)
        entry = re.match(r"^(\w+)(\s*=\s*)\d+(\s*# measured )\d+(.*)$", line.rstrip("\n"))
        if entry and (section, entry.group(1)) in measured:
            value = measured[(section, entry.group(1))]
            out.append(f"{entry.group(1):<6} = {budget(value):>5}  # measured {value}{entry.group(4)}\n")
        else:
            out.append(line)
    open(BUDGET, "w").write("".join(out))


if __name__ == "__main__":
    main()
