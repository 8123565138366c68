"""Copy the headline tables of the generated study pages into docs/results/README.md (the results index), so no
page but a generated one holds a typed number.

The index marks one block per page and table::

    <!-- results:malc_cpu_study:claims -->     the paper's claims and their verdicts
    <!-- results:malc_cpu_study:main -->       the cells (mean Dice per architecture x variant)
    <!-- results:malc_cpu_study:vs-none -->    each variant vs none, with its interval and verdict
    <!-- /results -->                          ends any block

Everything between a start marker and the next ``<!-- /results -->`` is replaced by the first table after the
page's matching heading on ``docs/results/<page>.md``. ``make results`` runs this after regenerating the pages;
``--check`` exits 1 when the index is out of date (the test suite runs it that way).

    python scripts/sync_readme_results.py [--readme docs/results/README.md] [--pages docs/results] [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# block name -> the study page's heading whose first table the block copies (scseg/report/study_page.py)
SECTIONS: dict[str, str | None] = {
    "claims": "## The paper's claims",
    "main": "## Cells",
    "vs-none": "## Each SE variant vs none",
}
START = re.compile(r"<!-- results:(?P<page>[a-z0-9_]+):(?P<section>[a-z-]+) -->")
END = "<!-- /results -->"


def first_table(lines: list[str]) -> list[str]:
    """The first run of consecutive ``|``-lines in ``lines`` (empty when there is none)."""
    table: list[str] = []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return table


def page_table(page_text: str, section: str, page_name: str) -> list[str]:
    """The table README's ``section`` block copies from one results page; ValueError naming the page if absent."""
    if section not in SECTIONS:
        raise ValueError(f"unknown results block {section!r} for {page_name}; known: {', '.join(SECTIONS)}")
    lines = page_text.splitlines()
    heading = SECTIONS[section]
    if heading is None:
        end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
        body = lines[:end]
    else:
        start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
        if start is None:
            raise ValueError(f"{page_name} has no section {heading!r} (regenerate it with make results)")
        body = lines[start + 1 :]
    table = first_table(body)
    if not table:
        raise ValueError(f"{page_name}: no table for the README block {section!r}")
    return table


def sync(readme_text: str, pages_dir: Path) -> str:
    """README text with every marked block replaced by the current table of its page."""
    out: list[str] = []
    lines = readme_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        match = START.fullmatch(line.strip())
        i += 1
        if match is None:
            continue
        end = next((j for j in range(i, len(lines)) if lines[j].strip() == END), None)
        if end is None:
            raise ValueError(f"README block {line.strip()} has no closing {END}")
        page = pages_dir / f"{match['page']}.md"
        if not page.is_file():
            raise FileNotFoundError(f"README block {line.strip()} needs {page}; generate it with make results")
        out.extend(page_table(page.read_text(encoding="utf-8"), match["section"], str(page)))
        out.append(END)
        i = end + 1
    return "\n".join(out) + ("\n" if readme_text.endswith("\n") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "docs" / "results" / "README.md")
    parser.add_argument("--pages", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--check", action="store_true", help="exit 1 if README differs from the pages; write nothing")
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text(encoding="utf-8")
        synced = sync(current, args.pages)
    except (OSError, ValueError) as error:  # a missing page or a broken marker: one line naming it, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if synced != current:
            print(f"{args.readme} is out of date with {args.pages}: run python scripts/sync_readme_results.py")
            return 1
        print(f"{args.readme} matches {args.pages}")
        return 0
    if synced != current:
        args.readme.write_text(synced, encoding="utf-8")
        print(f"updated {args.readme} from {args.pages}")
    else:
        print(f"{args.readme} already matches {args.pages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
