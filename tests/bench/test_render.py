"""bench/render.py and the summary rows of bench/harness.py: pure functions on small input."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

import harness
import render

RESULT = {
    "benchmark": "ingest",
    "date": "2026-12-07",
    "commit": "abc1234",
    "machine": "2 x Xeon (2 cores)",
    "command": ".venv/bin/python bench/ingest.py",
    "rows": [harness.row("events/s (median)", 20657.4, at_least=20_000)],
}


def test_a_block_with_a_result_is_rewritten_and_others_are_left_alone() -> None:
    text = (
        "# B\n<!-- bench:ingest -->\nold\n<!-- /bench:ingest -->\n"
        "<!-- bench:train -->\nkept\n<!-- /bench:train -->\n"
    )
    out = render.render(text, {"ingest": RESULT})
    assert out == (
        "# B\n<!-- bench:ingest -->\n"
        "| measure | result | target | verdict |\n|---|---|---|---|\n"
        "| events/s (median) | 20,657 | ≥ 20,000 | met |\n\n"
        "Measured 2026-12-07 on 2 x Xeon (2 cores), commit abc1234: "
        "`.venv/bin/python bench/ingest.py`\n"
        "<!-- /bench:ingest -->\n"
        "<!-- bench:train -->\nkept\n<!-- /bench:train -->\n"
    )
    assert render.render(out, {"ingest": RESULT}) == out


def test_rows_carry_their_verdict() -> None:
    assert harness.row("p99 ms", 12.0, "{:.1f}", at_most=10)["verdict"] == "not met"
    assert harness.row("p99 ms", float("nan"), at_most=10)["result"] == "n/a"
    assert harness.row("rows", 5) == {
        "measure": "rows",
        "result": "5",
        "target": "",
        "verdict": "no target",
    }
