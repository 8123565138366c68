"""Volume metrics: counts from one bincount, Dice for every empty / non-empty case, tables and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scseg.metrics import (
    AVERAGING,
    CONFUSION_BLOCK,
    ROW_KEYS,
    ClassCounts,
    class_counts,
    confusion_counts,
    dice_from_counts,
    merge_counts,
    per_case_rows,
    summarize,
)


def test_confusion_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(6, 7, 8)).astype(np.int16)
    naive = np.zeros((4, 4), dtype=np.int64)
    for r, p in zip(ref.ravel(), pred.ravel()):
        naive[r, p] += 1
    assert np.array_equal(confusion_counts(ref, pred, 4), naive)
    counts = class_counts(ref, pred, 4)
    for k in range(4):
        assert counts.tp[k] == np.sum((ref == k) & (pred == k))
        assert counts.fp[k] == np.sum((ref != k) & (pred == k))
        assert counts.fn[k] == np.sum((ref == k) & (pred != k))
        assert counts.n_ref[k] == np.sum(ref == k) and counts.n_pred[k] == np.sum(pred == k)


def test_dice_for_every_empty_and_non_empty_case():
    ref = np.zeros((3, 4, 5), dtype=np.int64)
    pred = np.zeros_like(ref)
    ref[0, :2, :2] = 1  # class 1: 4 reference voxels
    pred[0, :2, :1] = 1  # 2 of them predicted, no false positives
    pred[0, 0, 1] = 0
    pred[1, 0, :3] = 1  # 3 false positives
    ref[2, 0, 0] = 2  # class 2: perfect
    pred[2, 0, 0] = 2
    pred[2, 3, 4] = 3  # class 3: prediction on an empty reference
    # class 4: absent from both
    dice = class_counts(ref, pred, 5).dice()
    assert dice[1] == pytest.approx(2 * 2 / (2 * 2 + 3 + 2))  # tp 2, fp 3, fn 2
    assert dice[2] == 1.0
    assert dice[3] == 0.0
    assert math.isnan(dice[4])
    n_bg = ref.size - 4 - 1
    bg_tp = int(np.sum((ref == 0) & (pred == 0)))
    assert dice[0] == pytest.approx(2 * bg_tp / (n_bg + int(np.sum(pred == 0))))


def test_dice_from_counts_nan_only_when_all_zero():
    dice = dice_from_counts(np.array([0, 0, 0, 3]), np.array([0, 1, 0, 1]), np.array([0, 0, 2, 0]))
    assert math.isnan(dice[0]) and dice[1] == 0.0 and dice[2] == 0.0 and dice[3] == pytest.approx(6 / 7)
    assert np.isnan(dice).sum() == 1


def test_bad_volumes_give_clear_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_counts(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match=r"prediction values must lie in 0\.\.1"):
        confusion_counts(np.zeros((2, 2), int), np.full((2, 2), 2), 2)
    with pytest.raises(ValueError, match="reference values"):
        confusion_counts(np.full((2, 2), -1), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="integer label volume"):
        confusion_counts(np.zeros((2, 2), np.float32), np.zeros((2, 2), int), 2)


def test_merge_counts_over_slabs_equals_the_whole_volume_and_array_roundtrip():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 3, size=(8, 5, 5))
    pred = rng.integers(0, 3, size=(8, 5, 5))
    whole = class_counts(ref, pred, 3)
    merged = merge_counts([class_counts(ref[:3], pred[:3], 3), class_counts(ref[3:], pred[3:], 3)])
    assert np.array_equal(merged.to_array(), whole.to_array())
    assert np.array_equal(ClassCounts.from_array(whole.as_array()).tp, whole.tp)
    assert np.array_equal(dice_from_counts(*whole.tp_fp_fn()), whole.dice())
    with pytest.raises(ValueError, match="different class counts"):
        merge_counts([whole, class_counts(ref, pred, 4)])
    with pytest.raises(ValueError, match="inconsistent"):
        ClassCounts(tp=[1], fp=[0], fn=[0], n_ref=[2], n_pred=[1])


def _counts(dice_spec: list[str]) -> ClassCounts:
    """Counts giving Dice 1 ('one'), 0.5 ('half'), 0 ('zero') or NaN ('nan') per class."""
    table = {"one": (10, 0, 0), "half": (1, 1, 1), "zero": (0, 2, 0), "nan": (0, 0, 0)}
    tp, fp, fn = (np.array([table[s][i] for s in dice_spec]) for i in range(3))
    return ClassCounts(tp=tp, fp=fp, fn=fn, n_ref=tp + fn, n_pred=tp + fp)


def test_per_case_rows_have_exactly_the_table_keys():
    rows = per_case_rows("s1", _counts(["one", "half", "nan"]), ["bg", "a", "b"])
    assert [tuple(r) for r in rows] == [ROW_KEYS] * 3
    assert math.isnan(rows[1].pop("hd95")) and math.isnan(rows[1].pop("nsd"))  # no surface metrics asked for
    assert rows[1] == {
        "subject": "s1",
        "class_id": 1,
        "class_name": "a",
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "n_ref": 2,
        "n_pred": 2,
        "dice": 0.5,
    }
    assert math.isnan(rows[2]["dice"])
    with pytest.raises(ValueError, match="2 class names"):
        per_case_rows("s1", _counts(["one", "half", "nan"]), ["bg", "a"])
    surface = np.array([[0.0, 2.5, np.nan], [1.0, 0.75, np.nan]])
    with_surface = per_case_rows("s1", _counts(["one", "half", "nan"]), ["bg", "a", "b"], surface)
    assert (with_surface[1]["hd95"], with_surface[1]["nsd"]) == (2.5, 0.75)


def test_summary_numbers_against_hand_computation():
    names = ["bg", "a", "b"]
    counts = {
        "s1": _counts(["one", "half", "nan"]),
        "s2": _counts(["one", "one", "half"]),
        "s3": _counts(["one", "nan", "nan"]),
    }
    summary = summarize(counts, names, split="test")
    assert summary["split"] == "test" and summary["subjects"] == ["s1", "s2", "s3"]
    assert summary["averaging"] == AVERAGING
    assert summary["per_class"]["bg"] == {"mean": 1.0, "std": 0.0, "n_nan": 0}
    a = summary["per_class"]["a"]
    assert a["mean"] == pytest.approx(0.75) and a["std"] == pytest.approx(math.sqrt(0.125)) and a["n_nan"] == 1
    b = summary["per_class"]["b"]
    assert b["mean"] == pytest.approx(0.5) and math.isnan(b["std"]) and b["n_nan"] == 2
    fg = summary["fg_dice_per_subject"]
    assert fg["s1"] == pytest.approx(0.5) and fg["s2"] == pytest.approx(0.75) and math.isnan(fg["s3"])
    assert summary["fg_mean"] == pytest.approx(0.625)
    assert summary["fg_std"] == pytest.approx(math.sqrt(2 * 0.125**2))
    rows = [row for sid, c in counts.items() for row in per_case_rows(sid, c, names)]
    from_rows = summarize(rows, names, split="test")
    assert from_rows["fg_mean"] == summary["fg_mean"] and from_rows["per_class"]["a"] == a


def test_summary_rejects_incomplete_or_duplicate_rows():
    names = ["bg", "a"]
    rows = per_case_rows("s1", _counts(["one", "half"]), names)
    with pytest.raises(ValueError, match="no rows for classes"):
        summarize(rows[:1], names, split="val")
    with pytest.raises(ValueError, match="two rows"):
        summarize(rows + rows[1:], names, split="val")
    with pytest.raises(ValueError, match="class names"):
        summarize(rows, ["bg", "other"], split="val")


@pytest.mark.parametrize("size", [1, 1000, CONFUSION_BLOCK, CONFUSION_BLOCK + 1, 3 * CONFUSION_BLOCK + 17])
@pytest.mark.parametrize("dtypes", [(np.int32, np.int16), (np.uint8, np.int64), (np.bool_, np.bool_)])
def test_confusion_counts_in_blocks_equal_the_per_voxel_count(size, dtypes):
    """The block-wise count equals counting every (reference, prediction) pair, across block edges and dtypes."""
    k = 2 if dtypes[0] == np.bool_ else 7
    rng = np.random.default_rng(size)
    ref = rng.integers(0, k, size).astype(dtypes[0])
    pred = rng.integers(0, k, size).astype(dtypes[1])
    expected = np.zeros((k, k), np.int64)
    np.add.at(expected, (ref.astype(np.int64), pred.astype(np.int64)), 1)
    np.testing.assert_array_equal(confusion_counts(ref, pred, k), expected)


@pytest.mark.parametrize("dtype, k", [(np.uint8, 28), (np.uint8, 256), (np.int8, 100), (np.int16, 300)])
def test_confusion_counts_do_not_wrap_around_in_narrow_label_dtypes(dtype, k):
    """MALC's 28 classes in uint8 labels: ref * K must be computed wide (in uint8, label 10 * 28 wraps to 24)."""
    rng = np.random.default_rng(k)
    ref = rng.integers(0, k, 5000).astype(dtype)
    pred = np.where(rng.random(5000) < 0.8, ref, rng.integers(0, k, 5000)).astype(dtype)
    expected = np.zeros((k, k), np.int64)
    np.add.at(expected, (ref.astype(np.int64), pred.astype(np.int64)), 1)
    np.testing.assert_array_equal(confusion_counts(ref, pred, k), expected)


def test_summary_carries_boundary_metrics_when_rows_have_them():
    rows = []
    for subject, (hd_a, nsd_a) in {"s1": (2.0, 0.5), "s2": (4.0, 1.0)}.items():
        rows += per_case_rows(
            subject,
            _counts(["one", "half", "nan"]),
            ["bg", "a", "b"],
            np.array([[0, hd_a, np.nan], [1, nsd_a, np.nan]]),
        )
    summary = summarize(rows, ["bg", "a", "b"], "test")
    assert summary["per_class_hd95"]["a"] == 3.0 and summary["fg_nsd_per_subject"] == {"s1": 0.5, "s2": 1.0}
    assert summary["fg_hd95_mean"] == 3.0
    plain = summarize(per_case_rows("s1", _counts(["one", "half", "nan"]), ["bg", "a", "b"]), ["bg", "a", "b"], "t")
    assert "fg_hd95_mean" not in plain
