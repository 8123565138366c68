"""Re-evaluation of a finished run folder: its checkpoint on one split, written as training writes its test.

Why a module of its own: ``scseg-evaluate`` is a thin face (arguments, one-line errors), and the steps (load the
run, prepare its data, predict every subject, the summary from the one builder with the hashes training recorded)
belong to the library, where finished runs gain new metrics without retraining.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scseg.engine.inference import MultiViewFusion, Predictor, combine, counts_to_rows
from scseg.engine.loading import load_run
from scseg.engine.run import write_per_case
from scseg.engine.spec import RunSpec, nsd_tolerances
from scseg.engine.summary import (
    build_summary,
    keep_training_provenance,
    recorded_hashes,
    training_summary,
    write_summary,
)
from scseg.models import count_parameters
from scseg.models.capacity import capacity_of
from scseg.models.se import se_kernel_path


@dataclass(frozen=True)
class Reevaluation:
    summary: dict
    per_case: Path
    summary_path: Path
    subjects: int


def run_predictor(spec: RunSpec, dm: Any, model: torch.nn.Module, device: torch.device | str) -> Predictor:
    """The run's own evaluation settings (batch size, restore, NSD tolerance, mirroring)."""
    return Predictor(
        model,
        dm,
        spec.trainer.eval_batch_size,
        device,
        resample=spec.trainer.eval_resample,
        nsd_tolerance_mm=nsd_tolerances(spec.eval.nsd_tolerance_mm, dm.class_names),
        tta=spec.eval.tta,
    )


def _score(predictor: Predictor, surfaces: bool, subjects) -> tuple[dict, dict | None]:
    if surfaces:
        return predictor.evaluate_with_surfaces(subjects)
    return predictor.evaluate(subjects), None


def reevaluate(
    run_dir: Path,
    split: str = "test",
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    tta: str | None = None,
    out: Path | None = None,
) -> Reevaluation:
    """Evaluate ``run_dir``'s ``checkpoint`` on ``split``; writes ``per_case[_<split>].csv`` and
    ``summary[_<split>].json`` into the run folder (the test split keeps training's file names), or into ``out``.

    ``tta`` overrides the run's ``eval.tta``; a protocol other than the run's own needs ``out``, so training's
    test results are never overwritten by numbers measured another way. Raises what loading and preparing raise
    (``OSError``, ``ValueError``, ``RuntimeError``, ``DataError``, ``DiskFullError``), each naming the file or setting.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    spec, dm, model, state = load_run(run_dir, checkpoint)
    if tta is not None and tta != spec.eval.tta:
        if out is None:
            raise ValueError(
                f"--tta {tta} differs from the run's eval.tta ({spec.eval.tta}): give --out DIR so the run's own "
                "test results are kept"
            )
        spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, tta=tta))
    device = torch.device(device)
    model.to(device)
    dm.prepare()  # may write cache entries
    predictor = run_predictor(spec, dm, model, device)
    counts, surfaces = _score(predictor, spec.eval.surface_metrics, dm.subjects(split))
    rows = counts_to_rows(counts, dm.class_names, surfaces)
    best_metric = state.get("best_metric")
    trained = training_summary(run_dir)
    summary = build_summary(
        spec,
        rows,
        dm.class_names,
        split,
        n_params=count_parameters(model),
        checkpoint=run_dir / "checkpoints" / f"{checkpoint}.pt",
        epoch=int(state["epoch"]),
        best_epoch=(state.get("extra") or {}).get("best_epoch"),
        best_val_dice=None if best_metric is None else float(best_metric),
        device=device,
        wall_time_s=time.perf_counter() - started,
        se_kernels=se_kernel_path(model),
        capacity=capacity_of(model),
        **recorded_hashes(run_dir, trained),
    )
    summary = keep_training_provenance(summary, trained)
    if tta is not None:  # the protocol these numbers were measured with, when asked for explicitly
        summary["tta"] = spec.eval.tta
    suffix = "" if split == "test" else f"_{split}"
    folder = run_dir if out is None else Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    per_case, summary_path = folder / f"per_case{suffix}.csv", folder / f"summary{suffix}.json"
    write_per_case(per_case, rows)
    write_summary(summary_path, summary)
    return Reevaluation(summary, per_case, summary_path, len(counts))


def evaluate_ensemble(
    run_dirs: list[Path],
    out: Path,
    split: str = "test",
    checkpoint: str = "best",
    device: torch.device | str = "cpu",
    weights: list[float] | None = None,
) -> Reevaluation:
    """The ensemble of ``run_dirs`` on ``split`` (``scseg.engine.inference.combine``: an ensemble of runs that
    preprocess alike, a multi-view fusion of runs sliced along different axes), ``weights`` per run (default equal):
    ``per_case.csv`` and ``summary.json`` in ``out``, the summary from the first run's settings plus ``ensemble``
    (the run folders), ``ensemble_weights`` and ``ensemble_kind`` (``ensemble`` or ``views``)."""
    started = time.perf_counter()
    device = torch.device(device)
    loaded = [(Path(r), *load_run(Path(r), checkpoint)) for r in run_dirs]
    members = []
    for run_dir, spec, dm, model, _ in loaded:
        model.to(device)
        members.append((str(run_dir), run_predictor(spec, dm, model, device)))
    ensemble = combine(members, weights)
    spec, dm = loaded[0][1], loaded[0][2]
    dm.prepare()
    counts, surfaces = _score(ensemble, spec.eval.surface_metrics, dm.subjects(split))
    rows = counts_to_rows(counts, dm.class_names, surfaces)
    summary = build_summary(
        spec,
        rows,
        dm.class_names,
        split,
        n_params=sum(count_parameters(m) for *_, m, _ in loaded),
        checkpoint=None,
        epoch=None,
        best_epoch=None,
        best_val_dice=None,
        config_hash=None,
        comparison_hash=None,
        device=device,
        wall_time_s=time.perf_counter() - started,
    )
    summary["ensemble"] = [str(r) for r in run_dirs]
    summary["ensemble_weights"] = [round(w, 6) for w in getattr(ensemble, "weights", [1.0])]
    summary["ensemble_kind"] = "views" if isinstance(ensemble, MultiViewFusion) else "ensemble"
    out.mkdir(parents=True, exist_ok=True)
    write_per_case(out / "per_case.csv", rows)
    write_summary(out / "summary.json", summary)
    return Reevaluation(summary, out / "per_case.csv", out / "summary.json", len(counts))


__all__ = ["Reevaluation", "evaluate_ensemble", "reevaluate"]
