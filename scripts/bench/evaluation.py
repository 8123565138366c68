"""Section evaluation: Dice counting against numpy loops and MONAI, the restore of probabilities, and the boundary
metrics (HD95, NSD) against the time the network takes to predict the same volumes."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import MALC_NUM_CLASSES, Section, Table, interleaved, median


def numpy_loop_dice(reference: Any, prediction: Any, num_classes: int, count: str) -> Any:
    """Per-class Dice the way it is usually written: two masks per class, their overlap, their sizes."""
    import numpy as np

    dice = np.full(num_classes, np.nan)
    for k in range(num_classes):
        ref, pred = reference == k, prediction == k
        if count == "sum":
            tp, n_ref, n_pred = np.logical_and(ref, pred).sum(), ref.sum(), pred.sum()
        else:
            tp, n_ref, n_pred = np.count_nonzero(ref & pred), np.count_nonzero(ref), np.count_nonzero(pred)
        if n_ref + n_pred:
            dice[k] = 2.0 * tp / (n_ref + n_pred)
    return dice


def section_evaluation(args: argparse.Namespace) -> Section:
    import numpy as np

    from scseg.metrics import class_counts, dice_from_counts

    n_volumes = 3 if args.quick else 15
    shape = (24, 28, 20) if args.quick else (160, 200, 165)
    k = MALC_NUM_CLASSES
    section = Section(
        "evaluation",
        "Evaluation: per-case per-class Dice",
        sizes=f"{n_volumes} volumes of {' x '.join(map(str, shape))} voxels{'' if args.quick else ' (MALC size)'}, "
        f"{k} classes; reference uint8 (what MALC's label map gives), prediction int16; prediction = "
        "reference with 10 % of voxels relabelled",
    )
    rng = np.random.default_rng(0)
    references, predictions = [], []
    for _ in range(n_volumes):
        ref = rng.integers(0, k, shape, dtype=np.uint8)
        pred = ref.astype(np.int16)
        flip = rng.random(shape) < 0.1
        pred[flip] = rng.integers(0, k, int(flip.sum()), dtype=np.int16)
        references.append(ref)
        predictions.append(pred)
    results: dict[str, list[Any]] = {}

    def method(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[], None]:
        def run() -> None:
            results[name] = [fn(r, p) for r, p in zip(references, predictions)]

        return run

    methods = {
        "scseg": method("scseg", lambda r, p: dice_from_counts(*class_counts(r, p, k).tp_fp_fn())),
        "numpy loop (sum)": method("numpy loop (sum)", lambda r, p: numpy_loop_dice(r, p, k, "sum")),
        "numpy loop (count_nonzero)": method(
            "numpy loop (count_nonzero)", lambda r, p: numpy_loop_dice(r, p, k, "count_nonzero")
        ),
    }
    times = interleaved(methods, max(2, args.repeats - 2), warmup=1)
    per_volume = {name: median(t) / n_volumes for name, t in times.items()}
    agree = all(
        np.array_equal(a, b, equal_nan=True)
        for name in methods
        if name != "scseg"
        for a, b in zip(results["scseg"], results[name])
    )
    monai_volumes = min(n_volumes, 1 if args.quick else 3)
    monai_note = monai_dice(references[:monai_volumes], predictions[:monai_volumes], k)
    if isinstance(monai_note, str):
        section.notes.append(f"MONAI skipped: {monai_note}")
    else:
        monai_seconds, monai_dice_values, monai_version = monai_note
        per_volume[f"MONAI {monai_version} DiceMetric"] = monai_seconds / monai_volumes
        monai_agree = all(
            np.allclose(m, s, rtol=1e-5, atol=1e-6, equal_nan=True)
            for m, s in zip(monai_dice_values, results["scseg"][:monai_volumes])
        )
        agree = agree and monai_agree
        section.notes.append(
            f"MONAI: DiceMetric(include_background=True, reduction='none', ignore_empty=False) on one-hot tensors "
            f"(monai.networks.utils.one_hot, included in its time; faster than passing labels with num_classes), "
            f"timed once on {monai_volumes} volume(s)."
        )
    table = Table(
        "Seconds per volume (median) and scseg's speed-up",
        [("method", "method", "s"), ("ms", "ms per volume", ".1f"), ("speedup", "scseg speed-up", ".1f")],
    )
    for name, seconds in per_volume.items():
        table.rows.append(
            {"method": name, "ms": 1e3 * seconds, "speedup": seconds / per_volume["scseg"] if name != "scseg" else None}
        )
    section.tables.append(table)
    section.extra["agree"] = bool(agree)
    section.extra["dice_checksum"] = float(np.nansum([np.nansum(d) for d in results["scseg"]]))
    section.raw = times
    section.notes.append(f"all methods give the same Dice: {'yes' if agree else 'NO'}")
    section.target(
        "scseg speed-up over the numpy loop (sum)", per_volume["numpy loop (sum)"] / per_volume["scseg"], 8.0, True
    )
    for name in per_volume:
        if name.startswith("MONAI"):
            section.target("scseg speed-up over MONAI", per_volume[name] / per_volume["scseg"], 50.0, True)
    restore_table(args, section)
    surface_table(args, section)
    return section


def interpolated_class(probabilities: Any, meta: Any, k: int) -> Any:
    """Class ``k``'s probability over the whole canonical grid: un-padded, placed in its crop (background 1
    outside it), then ``F.interpolate`` trilinear, the way scseg restored before interpolating box-wise."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, meta.shape))
    inside = tuple(slice(a, b) for a, b in meta.crop)
    grid = torch.full(tuple(meta.resampled_shape), 1.0 if k == 0 else 0.0)
    grid[inside] = torch.from_numpy(np.ascontiguousarray(probabilities[(k, *unpad)], dtype=np.float32))
    return F.interpolate(grid[None, None], size=tuple(meta.canonical_shape), mode="trilinear")[0, 0]


def dense_restore(probabilities: Any, meta: Any) -> Any:
    """The linear restore written directly: every class interpolated over the whole grid, arg-max kept as it goes."""
    import torch

    best = interpolated_class(probabilities, meta, 0)
    labels = torch.zeros(best.shape, dtype=torch.int16)
    for k in range(1, probabilities.shape[0]):
        up = interpolated_class(probabilities, meta, k)
        better = up > best
        best = torch.where(better, up, best)
        labels.masked_fill_(better, k)
    return labels.numpy()


def synthetic_restore_case(shape: tuple[int, int, int], k: int, seed: int) -> tuple[Any, Any]:
    """(probabilities on a 2 mm grid, PreprocessMeta) for a 1 mm head of ``shape``: K-1 ellipsoids of 3-30 mm
    radius inside a brain-sized ellipsoid; probabilities = softmax(8 x the class fractions of each coarse voxel),
    so boundaries are soft the way a trained network's are."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from scseg.data.preprocess import PreprocessMeta

    label = synthetic_head_label(shape, k, seed).astype(np.int64)
    coarse_shape = tuple(n // 2 for n in shape)
    fractions = F.avg_pool3d(
        F.one_hot(torch.from_numpy(label[: 2 * coarse_shape[0], : 2 * coarse_shape[1], : 2 * coarse_shape[2]]), k)
        .permute(3, 0, 1, 2)
        .float()[None],
        2,
    )[0]
    probs = torch.softmax(8.0 * fractions, 0).numpy()
    meta = PreprocessMeta(
        id=f"synthetic-{seed}", settings={}, version=0, canonical_shape=shape, canonical_spacing=(1.0, 1.0, 1.0),
        resampled_shape=coarse_shape, spacing=(2.0, 2.0, 2.0), crop=tuple((0, n) for n in coarse_shape),
        pad=((0, 0),) * 3, shape=coarse_shape, modalities=1, intensity_range=((0.0, 1.0),), norm_mean=(0.0,),
        norm_std=(1.0,), geometry={}, image_paths=(), label_path=None, num_classes=k,
    )  # fmt: skip
    return probs, meta


def restore_table(args: argparse.Namespace, section: Section) -> None:
    """Back to the file's grid (trainer.eval_resample=linear): scseg's box-wise restore vs the dense one."""
    import numpy as np

    from scseg.data.preprocess import invert_probabilities_to_canonical

    shape = (48, 56, 40) if args.quick else (160, 200, 165)
    cases = [synthetic_restore_case(shape, MALC_NUM_CLASSES, seed) for seed in range(1 if args.quick else 3)]
    results: dict[str, list[Any]] = {}

    def method(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[], None]:
        def run() -> None:
            results[name] = [fn(p, m) for p, m in cases]

        return run

    methods = {"scseg (box-wise)": method("scseg", invert_probabilities_to_canonical)}
    methods["dense"] = method("dense", dense_restore)
    times = interleaved(methods, max(2, args.repeats - 2), warmup=1)
    differ, ties = 0, 0
    for (probs, meta), a, b in zip(cases, results["scseg"], results["dense"]):
        where = np.argwhere(a != b)
        differ += len(where)
        classes: dict[int, Any] = {}  # each class interpolated once per case
        for voxel in map(tuple, where[:200]):
            pair = [int(a[voxel]), int(b[voxel])]
            for k in pair:
                if k not in classes:
                    classes[k] = interpolated_class(probs, meta, k)
            ties += abs(float(classes[pair[0]][voxel]) - float(classes[pair[1]][voxel])) < 1e-6
    scseg_s = median(times["scseg (box-wise)"]) / len(cases)
    dense_s = median(times["dense"]) / len(cases)
    table = Table(
        f"Back to the file's grid: {len(cases)} synthetic heads, {MALC_NUM_CLASSES} classes, 2 mm probabilities "
        f"-> {' x '.join(map(str, shape))} at 1 mm (trainer.eval_resample=linear)",
        [("method", "method", "s"), ("ms", "ms per volume", ".0f"), ("speedup", "scseg speed-up", ".1f")],
    )
    table.rows.append({"method": "scseg (box-wise)", "ms": 1e3 * scseg_s, "speedup": None})
    table.rows.append({"method": "dense (every class everywhere)", "ms": 1e3 * dense_s, "speedup": dense_s / scseg_s})
    section.tables.append(table)
    section.raw["restore"] = times
    section.extra["restore"] = {"voxels_differ": differ, "checked": min(differ, 200), "ties": ties}
    section.notes.append(
        "restore: scseg interpolates each class only inside the box where its coarse probability reaches 1/K "
        "(elsewhere it cannot win); dense interpolates all of them over the whole volume; labels differ at "
        f"{differ} of {sum(a.size for a in results['scseg'])} voxels"
        + (f", {ties} of the first {min(differ, 200)} checked are ties (two classes within 1e-6)" if differ else "")
    )


def synthetic_head_label(shape: tuple[int, int, int], k: int, seed: int) -> Any:
    """A 1 mm label volume of ``shape``: K-1 ellipsoids of 3-30 mm radius placed in a brain-sized region."""
    import numpy as np

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array(shape, np.float32) / 2
    label = np.zeros(shape, np.uint8)
    for c in range(1, k):
        radii = rng.uniform(3, 30, 3).astype(np.float32)
        middle = centre + rng.uniform(-0.3, 0.3, 3).astype(np.float32) * np.array(shape, np.float32)
        label[(((grid - middle[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1] = c
    return label


def surface_table(args: argparse.Namespace, section: Section) -> None:
    """HD95 + NSD of every structure (``scseg.metrics.surface_metrics``: the 27 foreground classes, as reported) on
    MALC-sized volumes, against the time the MALC CPU preset's network (U-Net width=cpu, 2 mm, coronal 96 x 96
    slices, eval batch 64) takes to predict the same volumes. The target: the metrics cost no more than the
    prediction."""
    import numpy as np
    import torch

    from scseg.metrics import surface_metrics
    from scseg.models import create_model

    n_volumes = 2 if args.quick else 15
    shape = (48, 56, 40) if args.quick else (160, 200, 165)
    k = MALC_NUM_CLASSES
    references = [synthetic_head_label(shape, k, seed) for seed in range(n_volumes)]
    # the prediction: the reference one voxel off along the first axis, plus 2 % of voxels relabelled at random
    rng = np.random.default_rng(1)
    predictions = []
    for ref in references:
        pred = np.roll(ref, 1, axis=0).astype(np.int16)
        flip = rng.random(shape) < 0.02
        pred[flip] = rng.integers(0, k, int(flip.sum()), dtype=np.int16)
        predictions.append(pred)
    model = create_model("unet", k, filters=8 if args.quick else 32, depth=4).eval()
    # coronal slices of the 2 mm grid, padded to the preset's canvas
    n_slices, canvas = shape[1] // 2, (32, 32) if args.quick else (96, 96)
    slices = torch.randn(n_slices, 1, *canvas)

    def predict() -> None:
        with torch.no_grad():
            for _ in range(n_volumes):
                for batch in slices.split(64):
                    model(batch).argmax(1)

    def metrics() -> None:
        for ref, pred in zip(references, predictions):
            surface_metrics(ref, pred, k, (1.0, 1.0, 1.0))

    times = interleaved({"prediction": predict, "surface metrics": metrics}, max(2, args.repeats - 2), warmup=1)
    predict_s = median(times["prediction"]) / n_volumes
    metrics_s = median(times["surface metrics"]) / n_volumes
    table = Table(
        f"Boundary metrics (HD95 + NSD, {k - 1} structures) against prediction: {n_volumes} volumes of "
        f"{' x '.join(map(str, shape))} at 1 mm",
        [("what", "what", "s"), ("ms", "ms per volume", ".0f"), ("ratio", "x prediction", ".2f")],
    )
    table.rows.append(
        {"what": f"U-Net width=cpu forward, {n_slices} slices of {canvas[0]} x {canvas[1]}", "ms": 1e3 * predict_s}
        if not args.quick
        else {"what": f"U-Net (8 filters) forward, {n_slices} slices of 32 x 32", "ms": 1e3 * predict_s}
    )
    table.rows.append({"what": "surface_metrics", "ms": 1e3 * metrics_s, "ratio": metrics_s / predict_s})
    section.tables.append(table)
    section.raw["surface_metrics"] = times
    section.target("boundary metrics time / prediction time", metrics_s / predict_s, 1.0, False)


def section_evaluation_runs(args: argparse.Namespace) -> Section:
    """Real data: every ``--eval-run`` predicts its first test subjects once per ``eval.tta`` mode (restored to each
    file's grid, as evaluation does), then ``surface_metrics`` scores the plain prediction against the reference in
    the file's spacing. Subjects are the rounds: modes and metrics are interleaved within each subject."""
    from pathlib import Path

    from scseg.engine.inference import TTA_MODES
    from scseg.engine.loading import load_run
    from scseg.engine.reevaluate import run_predictor

    section = Section(
        "evaluation_runs",
        "Evaluation of finished runs: test-time mirroring and boundary metrics on real data",
        sizes=f"the first {args.eval_subjects} test subjects of each run, predicted on the CPU",
    )
    if not args.eval_run:
        section.skipped = "no --eval-run RUN_DIR given"
        return section
    for run in args.eval_run:
        try:
            spec, dm, model, _ = load_run(Path(run), "best")
        except (OSError, ValueError) as error:  # not a run folder, no checkpoint, another model's checkpoint
            raise SystemExit(f"--eval-run {run}: {error}") from None
        dm.prepare()
        predictor = run_predictor(spec, dm, model, "cpu")
        subjects = list(dm.subjects("test"))[: args.eval_subjects]
        times: dict[str, list[float]] = {f"prediction, eval.tta={mode}": [] for mode in TTA_MODES}
        times["surface_metrics"] = []
        shapes = set()
        for subject in subjects:
            for mode in TTA_MODES:
                predictor.tta = mode
                started = time.perf_counter()
                prediction = predictor.predict(subject)
                times[f"prediction, eval.tta={mode}"].append(time.perf_counter() - started)
                if mode == "none":
                    plain = prediction
            reference = dm.reference(subject)
            started = time.perf_counter()
            predictor.surfaces(subject, reference, plain)
            times["surface_metrics"].append(time.perf_counter() - started)
            shapes.add(" x ".join(map(str, reference.shape)))
        baseline = median(times["prediction, eval.tta=none"])
        table = Table(
            f"{run}: {len(subjects)} test subjects, {dm.num_classes - 1} structures, file grids "
            f"{', '.join(sorted(shapes))}",
            [("what", "what", "s"), ("ms", "ms per volume (median)", ".0f"), ("ratio", "x plain prediction", ".2f")],
        )
        for name, values in times.items():
            ratio = median(values) / baseline if name != "prediction, eval.tta=none" else None
            table.rows.append({"what": name, "ms": 1e3 * median(values), "ratio": ratio})
        section.tables.append(table)
        section.raw[run] = times
        section.target(
            f"boundary metrics time / prediction time ({Path(run).name})",
            median(times["surface_metrics"]) / baseline,
            1.0,
            False,
        )
    section.notes.append(
        "prediction = the run's slices through its network, class probabilities stacked and restored to the file's "
        "grid (the arg-max there); mirror_lr runs the network twice per slice, mirror four times"
    )
    return section


def monai_dice(references: Sequence[Any], predictions: Sequence[Any], num_classes: int) -> tuple | str:
    """(seconds, Dice per volume, MONAI version), or why MONAI was skipped (it is an optional dependency)."""
    try:
        import monai
        import torch
        from monai.metrics import DiceMetric
        from monai.networks.utils import one_hot
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    values = []
    started = time.perf_counter()
    for ref, pred in zip(references, predictions):
        y = one_hot(torch.from_numpy(ref.astype("int64"))[None, None], num_classes)
        y_pred = one_hot(torch.from_numpy(pred.astype("int64"))[None, None], num_classes)
        values.append(metric(y_pred, y)[0].double().numpy())
        metric.reset()
        del y, y_pred
    return time.perf_counter() - started, values, monai.__version__


# ---------------------------------------------------------------------------------------------- GPU
