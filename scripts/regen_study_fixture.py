"""Regenerate the study-page test fixture: `python scripts/regen_study_fixture.py`.

tests/report/test_study.py checks that `scseg-study page` turns the committed tests/report/fixtures/study/per_case.csv
into tests/report/fixtures/study/expected.md byte for byte (the same check the committed results pages get). A
deliberate change of the page's format is this one command, reviewed as the diff of the expected page.

The CSV is synthetic: U-Net (5 seeds) and FC-DenseNet (3 seeds, under-trained on validation) x none / cSE / sSE /
scSE plus the controls, 8 test subjects, 4 structures of very different size. Seeded random numbers with known
effects: scSE +3 points on U-Net, cSE -4 points on the smallest structure only, sSE 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scseg.report.tidy import CaseRow, variant_label, write_csv

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "tests" / "report" / "fixtures" / "study"
STRUCTURES = (("big", 50_000), ("medium", 8_000), ("small", 900), ("tiny", 150))
SETTINGS = ["--set", "small_structures=[tiny]", "--set", "n_boot=2000"]


def make_rows() -> list[CaseRow]:
    rng = np.random.default_rng(2018)
    subjects = [f"s{i:02d}" for i in range(8)]
    difficulty = rng.normal(0, 0.03, len(subjects))
    cells = {
        "unet": (5, 0.85, 0.86),
        "fcdensenet": (3, 0.74, 0.79),
    }
    variants = [
        ("none", None, 1.0, None, 0.0),
        ("cse", None, 1.0, None, 0.0),
        ("sse", None, 1.0, None, 0.0),
        ("scse", "add", 1.0, None, 0.03),
        ("scse", "max", 1.0, None, 0.02),
        ("cse", None, 2.0, None, 0.01),
        ("none", None, 1.0, "scse", 0.005),
    ]
    rows = []
    for arch, (seeds, level, val) in cells.items():
        for se, aggregation, scale, capacity, shift in variants:
            label = variant_label(se, aggregation, scale, capacity)
            for seed in range(seeds):
                offset = rng.normal(0, 0.004)
                run = f"{arch}-{label}-seed{seed}"
                for j, subject in enumerate(subjects):
                    for k, (structure, volume) in enumerate(STRUCTURES):
                        tiny_hit = -0.04 if (se == "cse" and structure == "tiny") else 0.0
                        size_penalty = 0.04 * k
                        dice = level - size_penalty + difficulty[j] + offset + shift + tiny_hit
                        dice += rng.normal(0, 0.005)
                        rows.append(
                            CaseRow(
                                arch=arch,
                                variant=label,
                                se=se,
                                aggregation=aggregation or "",
                                gate_scale=scale,
                                capacity_match=capacity or "",
                                seed=seed,
                                fold=None,
                                run=run,
                                n_params=100_000 if capacity is None else 117_000,
                                comparison_hash="abc123",
                                commit="0123456789ab",
                                dirty="no",
                                cpu="synthetic",
                                software="synthetic",
                                se_kernels="aten" if se != "none" else "none",
                                val_dice=val + offset,
                                subject=subject,
                                class_id=k + 1,
                                structure=structure,
                                n_ref=float(volume * (1 + 0.1 * difficulty[j])),
                                dice=float(min(dice, 1.0)),
                            )
                        )
    return rows


def main() -> None:
    from scseg.cli.study import main as study

    FOLDER.mkdir(parents=True, exist_ok=True)
    write_csv(make_rows(), FOLDER / "per_case.csv")
    study(page_arguments(FOLDER))
    print(f"fixture: {(FOLDER / 'per_case.csv').stat().st_size // 1024} KB")


def page_arguments(folder: Path, page: Path | None = None) -> list[str]:
    page = page or folder / "expected.md"
    return [
        "page",
        "--csv",
        str(folder / "per_case.csv"),
        "--page",
        str(page),
        "--task",
        "synthetic",
        "--no-figures",
        "--command",
        "python scripts/regen_study_fixture.py",
        *SETTINGS,
    ]


if __name__ == "__main__":
    main()
