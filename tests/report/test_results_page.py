"""scseg-compare --results-page: the committed page regenerates byte for byte from the committed run folders, and
what it says when cells, n_ref, scipy or subjects are missing.

The fixture is written by scripts/regen_results_fixture.py; after a deliberate format change rerun that script and
review the diff of tests/report/fixtures/results_sweep_expected.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from scseg.cli.compare import main
from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SWEEP = FIXTURES / "results_sweep"
EXPECTED = FIXTURES / "results_sweep_expected.md"
NO_FIGURE = "Figure not drawn: disabled (--no-figures)."


def _generator():
    """scripts/regen_results_fixture.py as a module: the test runs exactly the arguments the script ran."""
    return load_script("regen_results_fixture")


def _copy_sweep(tmp_path: Path, keep=lambda name: True) -> Path:
    """The fixture's run folders under another absolute path (same folder name, as the page names it)."""
    root = tmp_path / "elsewhere" / SWEEP.name
    root.mkdir(parents=True)
    for folder in sorted(SWEEP.iterdir()):
        if keep(folder.name):
            shutil.copytree(folder, root / folder.name)
    return root


def _edit_summaries(root: Path, edit) -> None:
    for path in sorted(root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        edit(path.parent.name, summary)
        path.write_text(json.dumps(summary, indent=2))


def _page(root: Path, tmp_path: Path, *extra: str) -> str:
    page = tmp_path / "out" / "page.md"
    assert main([str(root), "--results-page", str(page), "--no-figures", *extra]) == 0
    return page.read_text(encoding="utf-8")


def _claim_line(markdown: str, key: str) -> str:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {key} ")]
    return line


def test_page_equals_the_committed_page_byte_for_byte(tmp_path, capsys):
    pytest.importorskip("scipy")
    regen = _generator()
    root = _copy_sweep(tmp_path)  # another absolute path: the page must not depend on where the runs lie
    page = tmp_path / "docs" / "results" / "fixture.md"
    assert main(regen.page_arguments(root, page)) == 0
    assert page.read_bytes() == EXPECTED.read_bytes()
    assert str(tmp_path) not in page.read_text(encoding="utf-8")
    assert not list(page.parent.glob("*.png"))
    out = capsys.readouterr().out
    assert "| C2 sSE beats cSE. | reproduced |" in out and f"Wrote {page}" in out


def test_committed_run_folders_are_what_the_generator_writes(tmp_path):
    regen = _generator()
    fresh = tmp_path / "results_sweep"
    regen.write_sweep(fresh)
    committed = sorted(p.relative_to(SWEEP) for p in SWEEP.rglob("*") if p.is_file())
    assert committed == sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    for rel in committed:
        assert (SWEEP / rel).read_bytes() == (fresh / rel).read_bytes(), rel
    size = sum((SWEEP / rel).stat().st_size for rel in committed) + EXPECTED.stat().st_size
    assert size < 200 * 1024


def test_fixture_page_states_verdicts_rules_and_provenance():
    markdown = EXPECTED.read_text(encoding="utf-8")
    verdicts = {key: _claim_line(markdown, key).split("|")[2].strip() for key in ("C1", "C2", "C3", "C4", "C5")}
    assert verdicts == {
        "C1": "inconclusive",
        "C2": "reproduced",
        "C3": "inconclusive",
        "C4": "reproduced",
        "C5": "contradicted",
    }
    assert "| C5 U-Net gains most from scSE. | contradicted | 0.03125 |" in markdown  # 2 x 2/2^7
    assert "Small structures (1 of 3, smallest first): amygdala" in markdown
    command = (
        "scseg-train -m experiment=paper_malc_cpu launcher=joblib model=fcdensenet,sdnet,unet "
        "se=cse,none,scse,sse seed=0,1"
    )
    assert command in markdown and "paths.runs_dir" not in markdown and "/scratch" not in markdown
    assert "| U-Net | 2,103,588 | 2,120,228 (+0.8%) |" in markdown
    assert "(2 seeds, spread " in markdown and "MIXED" not in markdown


def test_figure_is_written_beside_the_page_and_linked_relatively(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("scipy")
    page = tmp_path / "results" / "malc_cpu.md"
    args = [a for a in _generator().page_arguments(SWEEP, page) if a != "--no-figures"]
    assert main(args) == 0
    png = page.with_name("malc_cpu_structures.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    link = "![Per-structure Dice per SE variant and architecture](malc_cpu_structures.png)"
    assert page.read_text(encoding="utf-8") == EXPECTED.read_text(encoding="utf-8").replace(NO_FIGURE, link)


def test_only_unet_runs_leave_claims_not_tested(tmp_path):
    pytest.importorskip("scipy")
    root = _copy_sweep(tmp_path, keep=lambda name: name.startswith("unet-"))
    markdown = _page(root, tmp_path)
    missing = "not tested (missing: SD-Net (no runs), FC-DenseNet (no runs))"
    for key in ("C1", "C2", "C3", "C4", "C5"):
        assert missing in _claim_line(markdown, key), key
    # U-Net's own comparisons are still tested (Holm over the 3 that exist)
    assert "| U-Net | sSE | +0.011 ± 0.001 | 7 | 0.01562 | 0.04688 | reproduced |" in markdown
    assert "| SD-Net | cSE | — | — | — | — | not tested (missing: SD-Net (no runs)) |" in markdown
    assert (
        "scseg-train -m experiment=paper_malc_cpu launcher=joblib model=unet se=cse,none,scse,sse seed=0,1" in markdown
    )


def test_missing_cell_is_named(tmp_path):
    pytest.importorskip("scipy")
    root = _copy_sweep(tmp_path, keep=lambda name: not name.startswith("sdnet-cse-"))
    markdown = _page(root, tmp_path)
    assert "not tested (missing: SD-Net/cSE)" in _claim_line(markdown, "C2")
    assert "not tested (missing: SD-Net/cSE)" in _claim_line(markdown, "C4")
    assert _claim_line(markdown, "C5").split("|")[2].strip() == "contradicted"  # needs no cSE
    assert "runs hold 22 of the 24 combinations" in markdown  # the reconstructed command would train more


def test_without_scipy_verdicts_say_why_there_is_no_p_value(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    markdown = _page(SWEEP, tmp_path)
    reason = "inconclusive (no p-value: scipy not installed (pip install -e .[report]))"
    for key in ("C1", "C2", "C3", "C4", "C5"):
        assert reason in _claim_line(markdown, key), key
    assert (
        f"| U-Net | cSE | -0.008 ± 0.001 | 7 | — (scipy not installed (pip install -e .[report])) | — | {reason} |"
        in (markdown)
    )


def test_too_few_subjects_give_no_p_value(tmp_path):
    pytest.importorskip("scipy")
    markdown = _page(SWEEP, tmp_path, "--min-pairs", "8")
    assert "inconclusive (no p-value: n too small (7 < 8 pairs))" in _claim_line(markdown, "C2")
    assert "Fewer than 8 paired subjects give no p-value" in markdown


def test_per_case_without_n_ref_leaves_c4_not_tested(tmp_path):
    pytest.importorskip("scipy")
    root = _copy_sweep(tmp_path)
    for path in root.glob("*/per_case.csv"):
        rows = [line.split(",") for line in path.read_text().splitlines()]
        path.write_text("\n".join(",".join(r[:3] + r[4:]) for r in rows) + "\n")  # drop the n_ref column
    markdown = _page(root, tmp_path)
    assert "not tested (missing: n_ref in the `none` runs' per_case.csv)" in _claim_line(markdown, "C4")
    assert _claim_line(markdown, "C2").split("|")[2].strip() == "reproduced"


def test_unknown_and_mixed_provenance_are_flagged(tmp_path):
    pytest.importorskip("scipy")
    root = _copy_sweep(tmp_path)

    def edit(name: str, summary: dict) -> None:
        summary.pop("cpu_model")  # runs written before cpu_model existed
        summary.pop("cpu_count")
        if name.startswith("fcdensenet-"):
            summary["git_commit"] = "0" * 40

    _edit_summaries(root, edit)
    markdown = _page(root, tmp_path)
    assert "- cpu_model: unknown\n" in markdown and "- cpu_count: unknown\n" in markdown
    assert (
        f"- scseg commit: {'0' * 40} (8 runs), 3f2a9c1e5b7d4a608c2e1f9b0d3a5c7e9f1b2d4a (16 runs) (MIXED)" in markdown
    )


def test_problem_reasons_carry_no_absolute_path(tmp_path):
    pytest.importorskip("scipy")
    root = _copy_sweep(tmp_path)
    (bad,) = root.glob("unet-sse-seed1-*")
    (bad / "summary.json").write_text(json.dumps({"arch": "unet"}))
    markdown = _page(root, tmp_path)
    assert f"{bad.name}/summary.json: missing key(s)" in markdown
    assert str(tmp_path) not in markdown
    assert "## Runs not used, or used with a caveat (1)" in markdown


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x"], "--out does not apply"),
        (["--alternative", "greater"], "two-sided"),
        (["--alpha", "1.5"], "--alpha"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, extra, message):
    assert main([str(SWEEP), "--results-page", str(tmp_path / "p.md"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.md").exists()
