"""Regenerate the results-page test fixture: `python scripts/regen_results_fixture.py`.

Why this script exists: tests/report/test_results_page.py checks that `scseg-compare --results-page` writes,
byte for byte, the committed tests/report/fixtures/results_sweep_expected.md from the committed run folders in
tests/report/fixtures/results_sweep/. A deliberate change of the page's format is then this one command, and the
change is reviewed as the diff of the expected page.

The run folders are synthetic and tiny: 3 architectures x 4 SE variants x 2 seeds, 7 test subjects, 4 classes
(background and three structures of very different size), with only what the report reads (summary.json,
per_case.csv, .hydra/config.yaml, .hydra/overrides.yaml). Every number comes from a closed formula (no random
generator), chosen so that the page shows every verdict: with 7 subjects an exact two-sided Wilcoxon p is at
least 2/2^7, so families of up to 3 tests can reach Holm significance (C2 reproduced, C4 reproduced, C5
contradicted) and the larger ones cannot (C1, C3 inconclusive).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "report" / "fixtures"
SWEEP = FIXTURES / "results_sweep"
EXPECTED = FIXTURES / "results_sweep_expected.md"
TASK = "MALC 2012 (synthetic fixture: 7 test subjects, 3 structures)"
EXPERIMENT = "paper_malc_cpu"

ARCHS = ("unet", "sdnet", "fcdensenet")
VARIANTS = ("none", "cse", "sse", "scse")
SEEDS = (0, 1)
SUBJECTS = tuple(f"sub{i:02d}" for i in range(1, 8))
# class id -> (name, reference volume of subject 1 in voxels, added per subject)
STRUCTURES = {1: ("cortex", 48000, 900), 2: ("thalamus", 7600, 130), 3: ("amygdala", 1450, 37)}
BASE = {"unet": (0.86, 0.82, 0.66), "sdnet": (0.85, 0.80, 0.63), "fcdensenet": (0.87, 0.83, 0.67)}
# (arch, variant) -> Dice change against `none` per structure: cSE hurts U-Net's smallest structure, sSE beats cSE
# everywhere, and SD-Net gains more from scSE than U-Net does.
EFFECT = {
    ("unet", "cse"): (0.004, 0.003, -0.030),
    ("unet", "sse"): (0.012, 0.010, 0.012),
    ("unet", "scse"): (0.014, 0.012, 0.008),
    ("sdnet", "cse"): (0.006, 0.004, -0.004),
    ("sdnet", "sse"): (0.016, 0.014, 0.015),
    ("sdnet", "scse"): (0.022, 0.020, 0.020),
    ("fcdensenet", "cse"): (0.002, 0.000, 0.001),
    ("fcdensenet", "sse"): (0.008, 0.007, 0.006),
    ("fcdensenet", "scse"): (0.009, 0.008, 0.007),
}
N_PARAMS = {"unet": 2_103_588, "sdnet": 1_051_300, "fcdensenet": 523_871}
SE_PARAMS = {
    "unet": {"cse": 16_640, "sse": 1_232, "scse": 17_872},
    "sdnet": {"cse": 8_320, "sse": 616, "scse": 8_936},
    "fcdensenet": {"cse": 21_504, "sse": 2_048, "scse": 23_552},
}
WALL_S = {"unet": 3100.0, "sdnet": 2600.0, "fcdensenet": 5400.0}
WALL_FACTOR = {"none": 1.0, "cse": 1.04, "sse": 1.06, "scse": 1.09}
COMMIT = "3f2a9c1e5b7d4a608c2e1f9b0d3a5c7e9f1b2d4a"
MACHINE = {
    "torch_version": "2.5.1+cpu",
    "python_version": "3.12.3",
    "device": "cpu (x86_64)",
    "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
    "cpu_count": 2,
    "threads": 2,
}


def dice(arch: str, variant: str, seed: int, subject: int, structure: int) -> float:
    """A Dice value: architecture base, subject difficulty, the variant's effect (varying a little per subject) and
    a small seed-dependent jitter; rounded to 6 decimals."""
    a, v, k = ARCHS.index(arch), VARIANTS.index(variant), structure - 1
    value = BASE[arch][k] + 0.012 * math.sin(1.7 * subject + k)
    if variant != "none":
        value += EFFECT[arch, variant][k] * (1.0 + 0.15 * math.sin(2.3 * subject + v + k))
    value += 0.0015 * math.sin(3.1 * subject + 1.3 * seed + 0.7 * v + 0.37 * a + 0.5 * k)
    value += 0.003 * math.sin(2.9 * seed + 1.1 * v + 0.6 * a + 0.4)  # the whole run: a seed-to-seed spread
    return round(value, 6)


def n_ref(subject: int, structure: int) -> int:
    _, first, step = STRUCTURES[structure]
    return first + step * (subject - 1)


def write_run(root: Path, arch: str, variant: str, seed: int) -> None:
    """One finished run folder, as the trainer writes it, reduced to what scseg-compare reads."""
    aggregation = "add" if variant == "scse" else None
    middle = f"{variant}-{aggregation}" if aggregation else variant
    config_hash = hashlib.sha256(f"{EXPERIMENT}/{arch}/{middle}/{seed}".encode()).hexdigest()
    folder = root / f"{arch}-{middle}-seed{seed}-{config_hash[:8]}"
    (folder / ".hydra").mkdir(parents=True)
    per_class = {s: [dice(arch, variant, seed, i, c) for c in STRUCTURES] for i, s in enumerate(SUBJECTS, start=1)}
    fg = {s: round(sum(values) / len(values), 6) for s, values in per_class.items()}
    mean = sum(fg.values()) / len(fg)
    std = math.sqrt(sum((v - mean) ** 2 for v in fg.values()) / (len(fg) - 1))
    summary = {
        "split": "test",
        "subjects": list(SUBJECTS),
        "fg_dice_per_subject": fg,
        "fg_mean": round(mean, 6),
        "fg_std": round(std, 6),
        "arch": arch,
        "se": variant,
        "aggregation": aggregation,
        "se_reduction": 2 if variant in ("cse", "scse") else None,
        "se_positions": ["encoder", "decoder"] if variant != "none" else None,
        "seed": seed,
        "experiment": EXPERIMENT,
        "config_hash": config_hash,
        "comparison_hash": hashlib.sha256(f"{EXPERIMENT}/{arch}".encode()).hexdigest(),
        "n_params": N_PARAMS[arch] + SE_PARAMS[arch].get(variant, 0),
        "scseg_version": "0.1.0",
        "git_commit": COMMIT,
        **MACHINE,
        "wall_time_s": round(WALL_S[arch] * WALL_FACTOR[variant] + 37.5 * seed + 11.0 * ARCHS.index(arch), 2),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with (folder / "per_case.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["subject", "class_id", "class_name", "n_ref", "dice"])
        for i, subject in enumerate(SUBJECTS, start=1):
            writer.writerow([subject, 0, "background", 1_000_000 - 60_000 - 150 * i, 0.998])
            for c, (name, _, _) in STRUCTURES.items():
                writer.writerow([subject, c, name, n_ref(i, c), per_class[subject][c - 1]])
    config = (
        f"experiment_name: {EXPERIMENT}\nseed: {seed}\nmodel:\n  arch: {arch}\n"
        f"se:\n  name: {variant}\n  aggregation: add\n  reduction: 2\n"
    )
    (folder / ".hydra" / "config.yaml").write_text(config, encoding="utf-8")
    overrides = [
        f"experiment={EXPERIMENT}",
        "launcher=joblib",
        f"model={arch}",
        f"se={variant}",
        f"seed={seed}",
        "paths.runs_dir=/scratch/someone/runs",  # a machine folder: the page must leave it out
    ]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides), encoding="utf-8")


def write_sweep(root: Path = SWEEP) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for arch in ARCHS:
        for variant in VARIANTS:
            for seed in SEEDS:
                write_run(root, arch, variant, seed)


def page_arguments(sweep: Path, page: Path) -> list[str]:
    """The scseg-compare arguments the test runs too (no figure: PNG bytes are not stable across matplotlib)."""
    return [str(sweep), "--results-page", str(page), "--task", TASK, "--no-figures"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page-only", action="store_true", help="keep the run folders, regenerate the page only")
    args = parser.parse_args()
    if not args.page_only:
        write_sweep()
    from scseg.cli.compare import main as compare  # after the folders exist; scseg is installed in the venv

    status = compare(page_arguments(SWEEP, EXPECTED))
    if status != 0:
        raise SystemExit(status)
    size = sum(p.stat().st_size for p in SWEEP.rglob("*") if p.is_file()) + EXPECTED.stat().st_size
    print(f"fixture: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
