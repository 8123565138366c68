"""The results index's tables (docs/results/README.md) are copies of the generated pages, never typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
sync_readme = load_script("sync_readme_results")

PAGE = """# Results: a task

Generated from ...

## The paper's claims

| Claim | Verdict | Decided by |
|---|---|---|
| C1 x | reproduced | U-Net |

## Reading this page

- words

## Cells

Mean foreground Dice over test subjects.

| Architecture | none | cSE |
|---|---|---|
| U-Net | 0.800 | 0.810 |

## Each SE variant vs none

![effects vs none](task_cpu_effects.png)

| Architecture | Variant | Verdict |
|---|---|---|
| U-Net | cSE | inconclusive |
"""


def test_committed_readme_matches_committed_pages():
    readme = (ROOT / "docs" / "results" / "README.md").read_text(encoding="utf-8")
    assert "<!-- results:" in readme, "README's Results section lost its generated blocks"
    assert sync_readme.sync(readme, ROOT / "docs" / "results") == readme, (
        "README's Results tables differ from docs/results: run python scripts/sync_readme_results.py"
    )


def test_stale_blocks_are_replaced_and_text_around_them_kept(tmp_path):
    (tmp_path / "task_cpu.md").write_text(PAGE, encoding="utf-8")
    readme = (
        "intro\n<!-- results:task_cpu:main -->\n| old | table |\n<!-- /results -->\nbetween\n"
        "<!-- results:task_cpu:claims -->\n<!-- /results -->\n"
        "<!-- results:task_cpu:vs-none -->\n<!-- /results -->\nend\n"
    )
    synced = sync_readme.sync(readme, tmp_path)
    assert "| old | table |" not in synced
    assert "| U-Net | 0.800 | 0.810 |" in synced
    assert "| C1 x | reproduced | U-Net |" in synced
    assert "| U-Net | cSE | inconclusive |" in synced
    assert synced.startswith("intro\n") and "\nbetween\n" in synced and synced.endswith("end\n")
    assert sync_readme.sync(synced, tmp_path) == synced  # idempotent


def test_check_mode_reports_out_of_date_readme(tmp_path):
    (tmp_path / "task_cpu.md").write_text(PAGE, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:task_cpu:main -->\n| stale |\n<!-- /results -->\n", encoding="utf-8")
    assert sync_readme.main(["--readme", str(readme), "--pages", str(tmp_path), "--check"]) == 1
    assert sync_readme.main(["--readme", str(readme), "--pages", str(tmp_path)]) == 0
    assert sync_readme.main(["--readme", str(readme), "--pages", str(tmp_path), "--check"]) == 0


@pytest.mark.parametrize(
    "readme, message",
    [
        ("<!-- results:missing_cpu:main -->\n<!-- /results -->\n", "missing_cpu.md"),
        ("<!-- results:task_cpu:main -->\nno end marker\n", "no closing"),
        ("<!-- results:task_cpu:figures -->\n<!-- /results -->\n", "unknown results block 'figures'"),
    ],
)
def test_bad_blocks_fail_with_a_message_naming_them(tmp_path, readme, message):
    (tmp_path / "task_cpu.md").write_text(PAGE, encoding="utf-8")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        sync_readme.sync(readme, tmp_path)


def test_command_line_reports_a_missing_page_in_one_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:gone_cpu:main -->\n<!-- /results -->\n", encoding="utf-8")
    assert sync_readme.main(["--readme", str(readme), "--pages", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "gone_cpu.md" in err and "Traceback" not in err
