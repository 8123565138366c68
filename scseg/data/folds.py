"""k-fold cross-validation by subject, stored as nnU-Net's ``splits_final.json``.

Why: a fixed split of a small dataset (CHAOS: 8 test subjects) decides nothing, and one subject can dominate it.
With ``data.folds = k`` every labelled subject of the layout (its train and test splits pooled) is tested exactly
once, by the network of its fold; a study runs every fold and gets one out-of-fold score per subject and seed.

The folds are a seeded partition of the sorted subject ids (``data.folds_seed``), so the same dataset, k and seed
give the same folds on every machine. They are written as nnU-Net writes them: a list of ``{"train": [case ids],
"val": [case ids]}``, one entry per fold, where nnU-Net's ``val`` is the held-out fold (scseg's test split of that
fold). ``data.splits_file`` reads such a file instead, so an nnU-Net user's folds carry over; scseg writes the
folds it used into each run folder (``splits_final.json``), which nnU-Net reads back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scseg.atomic import atomic_write_text
from scseg.data.errors import DataError
from scseg.data.jsonio import read_json
from scseg.data.types import Case

Folds = list[dict[str, list[str]]]  # nnU-Net's splits_final.json: [{"train": [...], "val": [...]}, ...]


def kfold_subjects(subjects: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """``k`` disjoint, sorted groups of ``subjects`` covering all of them, sizes differing by at most one."""
    unique = sorted(set(subjects))
    if k < 2:
        raise DataError(f"data.folds: expected at least 2 folds, got {k}")
    if k > len(unique):
        raise DataError(f"data.folds: {k} folds need at least {k} subjects; the dataset has {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [sorted(unique[i] for i in order[f::k]) for f in range(k)]


def make_folds(cases: Sequence[Case], k: int, seed: int) -> Folds:
    """Folds of case ids by subject (a subject's rescans stay in its fold), in nnU-Net's format."""
    groups = kfold_subjects([c.subject_id for c in cases], k, seed)
    folds = []
    for held_out in groups:
        out = set(held_out)
        folds.append(
            {
                "train": sorted(c.id for c in cases if c.subject_id not in out),
                "val": sorted(c.id for c in cases if c.subject_id in out),
            }
        )
    return folds


def check_folds(folds: object, case_ids: Sequence[str], where: str) -> Folds:
    """``folds`` as read from a splits file: a list of {"train", "val"} id lists over the known cases, each case
    held out exactly once and never in both lists of a fold. Raises ``DataError`` naming ``where``."""
    if not isinstance(folds, list) or not folds:
        raise DataError(f"{where}: expected a non-empty list of {{'train': [...], 'val': [...]}} folds")
    known = set(case_ids)
    held_out: dict[str, int] = {}
    clean: Folds = []
    for i, fold in enumerate(folds):
        if not isinstance(fold, dict) or not {"train", "val"} <= set(fold):
            raise DataError(f"{where}: fold {i} must be an object with 'train' and 'val' id lists")
        train, val = [str(x) for x in fold["train"]], [str(x) for x in fold["val"]]
        unknown = sorted((set(train) | set(val)) - known)
        if unknown:
            raise DataError(f"{where}: fold {i} names cases not in the dataset: {unknown[:10]}")
        both = sorted(set(train) & set(val))
        if both:
            raise DataError(f"{where}: fold {i} has cases in both 'train' and 'val': {both[:10]}")
        for case in val:
            if case in held_out:
                raise DataError(f"{where}: case {case!r} is held out in folds {held_out[case]} and {i}")
            held_out[case] = i
        clean.append({"train": sorted(train), "val": sorted(val)})
    never = sorted(known - set(held_out))
    if never:
        raise DataError(f"{where}: cases never held out by any fold: {never[:10]}; expected each exactly once")
    return clean


def read_splits_final(path: Path, case_ids: Sequence[str]) -> Folds:
    """An nnU-Net ``splits_final.json`` (checked against the dataset's case ids)."""
    expected = "nnU-Net's splits_final.json: a list of {'train': [case ids], 'val': [case ids]}, one per fold"
    return check_folds(read_json(path, "splits file", expected), case_ids, str(path))


def write_splits_final(folds: Folds, path: Path) -> None:
    """``folds`` as nnU-Net's ``splits_final.json`` (atomically)."""
    atomic_write_text(Path(path), json.dumps(folds, indent=4) + "\n")


def apply_fold(cases: Sequence[Case], folds: Folds, fold: int) -> dict[str, list[Case]]:
    """``{"train": ..., "test": ...}`` of fold ``fold`` (nnU-Net's ``val`` is scseg's test of that fold)."""
    if not 0 <= fold < len(folds):
        raise DataError(f"data.fold: {fold} is not a fold of {len(folds)}; expected 0 to {len(folds) - 1}")
    by_id = {c.id: c for c in cases}
    return {
        "train": [by_id[i] for i in folds[fold]["train"]],
        "test": [by_id[i] for i in folds[fold]["val"]],
    }


__all__ = [
    "Folds",
    "apply_fold",
    "check_folds",
    "kfold_subjects",
    "make_folds",
    "read_splits_final",
    "write_splits_final",
]
