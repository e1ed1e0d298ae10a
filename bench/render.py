"""Rewrite the results blocks of ``docs/benchmarks.md`` from ``bench/results/*.json``.

Each block lies between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a block without
``bench/results/NAME.json`` is left as it is. ``--check`` changes nothing and exits 1 when the
file is not up to date::

    .venv/bin/python bench/render.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def table(result: Mapping[str, Any]) -> str:
    """The Markdown table of one benchmark's summary rows, and the line saying where from."""
    lines = ["| measure | result | target | verdict |", "|---|---|---|---|"]
    for r in result["rows"]:
        cells = (r["measure"], r["result"], r["target"] or "-", r["verdict"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        f"Measured {result['date']} on {result['machine']}, commit {result['commit']}: "
        f"`{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def render(text: str, results: Mapping[str, Mapping[str, Any]]) -> str:
    """``text`` with every block that has a result rewritten."""

    def block(match: re.Match[str]) -> str:
        result = results.get(match.group(2))
        if result is None:
            return match.group(0)
        return match.group(1) + table(result) + match.group(4)

    return BLOCK.sub(block, text)


def read_results(folder: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "rows" in data:
            results[path.stem] = data
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file would change")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    text = args.doc.read_text()
    new = render(text, read_results(args.results_dir))
    if new == text:
        return 0
    if args.check:
        print(f"{args.doc} is not up to date: run bench/render.py", file=sys.stderr)
        return 1
    args.doc.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
