"""Every relative link in README.md and docs/ points at a file or folder that exists (pages move: the first results
pages went to docs/results/archive/), and every anchor into a Markdown page names one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_relative_links_resolve():
    broken, checked = [], 0
    for page in _pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve()
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
                continue
            if anchor and resolved.suffix == ".md":
                headings = [
                    _anchor(line.lstrip("#"))
                    for line in resolved.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")
                ]
                if anchor not in headings:
                    broken.append(f"{page.relative_to(REPO)} -> {target} (no such heading)")
    assert checked > 50, f"only {checked} relative links found: is the pattern still right?"
    assert not broken, "broken links:\n" + "\n".join(broken)
