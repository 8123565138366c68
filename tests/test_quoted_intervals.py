"""Every interval the prose of README.md and the results index quotes is one a generated study page gives.

The pages are regenerated from their CSVs (and re-analysed when the analysis changes: a control more widens every
control's interval); the prose around them is typed. This keeps the typed copies from going stale: each quoted
interval, "[-0.64, +1.83]" or "(-0.64 to +1.83)", must match an interval on a study page at the quoted precision.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
NUMBER = r"([+-]?\d+\.\d+)"
QUOTED = re.compile(rf"\[{NUMBER},\s+{NUMBER}\]|\({NUMBER}\s+to\s+{NUMBER}\)")
BLOCK = re.compile(r"<!-- results:.*?<!-- /results -->", re.S)  # tables copied from the pages by a script


def _intervals(text: str) -> list[tuple[str, str]]:
    return [(m[0] or m[2], m[1] or m[3]) for m in QUOTED.findall(text)]


def _page_intervals() -> list[tuple[float, float]]:
    pages = sorted(RESULTS.glob("*.md"))
    pages = [p for p in pages if p.name != "README.md"]
    return [(float(a), float(b)) for p in pages for a, b in _intervals(p.read_text(encoding="utf-8"))]


def _decimals(number: str) -> int:
    return len(number.split(".")[1])


def test_quoted_intervals_come_from_the_pages():
    known = _page_intervals()
    assert len(known) > 100
    quoted = []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quoted += [("README.md", q) for q in _intervals(readme[readme.index("## What the studies found") :])]
    index = BLOCK.sub("", (RESULTS / "README.md").read_text(encoding="utf-8"))
    quoted += [("docs/results/README.md", q) for q in _intervals(index)]
    assert len(quoted) > 10
    stale = []
    for where, (low, high) in quoted:
        d = max(_decimals(low), _decimals(high))
        wanted = (round(float(low), d), round(float(high), d))
        if not any((round(a, d), round(b, d)) == wanted for a, b in known):
            stale.append(f"{where}: [{low}, {high}]")
    assert not stale, "intervals quoted but on no study page (stale after a re-analysis?):\n" + "\n".join(stale)
