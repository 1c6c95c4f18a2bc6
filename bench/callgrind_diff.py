"""Where one configuration's extra instructions go, function by function.

`bench/instructions.py --keep DIR` leaves `CONFIG-all-1000.callgrind` and `...-4000...` files;
this subtracts, for every C function (CPython's own included, so Python code shows up as the
interpreter work it causes), the small run from the large one, divides by the requests between
them, and prints the per-request difference between two configurations, largest first.

Usage: python bench/callgrind_diff.py DIR BASE CONFIG [--top N]
  e.g. python bench/callgrind_diff.py /tmp/cg plain lwsobs-metrics
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

_LINE = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(.*)")
SMALL, LARGE = 1000, 4000


def per_function(path: Path) -> dict[str, int]:
    """Exclusive instructions per function of one callgrind output (callgrind_annotate)."""
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in out.splitlines():
        match = _LINE.match(line)
        if match is None or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"^/tmp/python-build[^:]*/", "", match.group(2).split(" [")[0])
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def per_request(directory: Path, config: str) -> dict[str, float]:
    small = per_function(directory / f"{config}-all-{SMALL}.callgrind")
    large = per_function(directory / f"{config}-all-{LARGE}.callgrind")
    return {k: (large.get(k, 0) - small.get(k, 0)) / (LARGE - SMALL) for k in small | large}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("base")
    parser.add_argument("config")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    base = per_request(args.directory, args.base)
    config = per_request(args.directory, args.config)
    rows = sorted(((config.get(k, 0.0) - base.get(k, 0.0), k) for k in base | config), reverse=True)
    print(f"{args.config} - {args.base}: {sum(v for v, _ in rows):,.0f} instructions/request")
    for value, name in rows[: args.top]:
        print(f"{value:10,.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
