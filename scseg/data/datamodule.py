"""The one object the trainer, evaluator and predictor ask for data.

Why this module exists: it turns the composed `data` config node into splits of cached, preprocessed
subjects, the training slice dataset (with augmentation) and its loader (sample order from `EpochSampler`),
class names and weights, evaluation views, and the way back from a prediction in the preprocessed grid to the
file's own grid. Nothing above it needs to know about layouts, label maps, caching, sampling or geometry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from scseg.data.augment import build_augmentation
from scseg.data.cache import ClassStatistics, SubjectCache, class_statistics_of
from scseg.data.errors import DataError
from scseg.data.folds import Folds, apply_fold, make_folds, read_splits_final
from scseg.data.io import read_subject, strip_image_suffix, to_original
from scseg.data.label_map import load_label_map
from scseg.data.layouts import load_layout, split_validation
from scseg.data.preprocess import (
    PreprocessedSubject,
    PreprocessSettings,
)
from scseg.data.sampler import EpochSampler
from scseg.data.slices import Canvas, SliceDataset, SubjectSlices, canvas_of
from scseg.data.types import SPLITS, Case
from scseg.paths import resolve_path

# Below this many training subjects, `val_fraction` leaves validation off (a volume taken away would cost more
# than the curve is worth); `val_subjects` set explicitly still applies.
MIN_TRAIN_FOR_VALIDATION = 3


def _get(cfg: Mapping, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else default
    return default if value is None else value


def case_id_from_path(path: str | os.PathLike) -> str:
    """File name without its image suffix (`io.IMAGE_SUFFIXES`: .nii.gz, .nii, .mgz)."""
    name = Path(path).name
    return strip_image_suffix(name) or name


class DataModule:
    """Splits, cached subjects, datasets, class weights and inverse geometry for one `data` config.

    `cfg_data` is the composed `data` node (see `scseg.config.compose_data_config`); `seed` drives
    every random draw of the training slices (with the epoch and item index) and their order.
    """

    def __init__(self, cfg_data: Mapping, seed: int = 0) -> None:
        self.cfg = cfg_data
        self.seed = int(seed)
        if "label_map" not in cfg_data or cfg_data.get("label_map") is None:
            raise DataError("data.label_map: missing; every dataset config must select a label map")
        if "layout" not in cfg_data or cfg_data.get("layout") is None:
            raise DataError("data.layout: missing; every dataset config must describe its file layout")
        self.label_map = load_label_map(cfg_data["label_map"])
        self.settings = PreprocessSettings.from_config(cfg_data)
        slices = _get(cfg_data, "slices", {})
        self.axis = self.settings.axis  # the configured rule; each subject's own axis is meta.slice_axis
        self.context = int(_get(slices, "context", 0))
        self.min_foreground = float(_get(slices, "min_foreground", 0.0))
        self.foreground_oversample = float(_get(slices, "foreground_oversample", 0.0))
        self.normalize = str(_get(cfg_data, "normalize", "zscore"))
        self.allow_4d_channels = bool(_get(cfg_data, "allow_4d_channels", False))
        self.augment_cfg = cfg_data.get("augment")
        build_augmentation(self.augment_cfg)  # fail early on a bad augmentation config
        loader = _get(cfg_data, "loader", {})
        self.batch_size = int(_get(loader, "batch_size", 8))
        self.num_workers = int(_get(loader, "num_workers", 0))
        self.pin_memory = bool(_get(loader, "pin_memory", False))
        self._cache = SubjectCache(cfg_data.get("cache_dir"), self.settings, self.label_map, self.allow_4d_channels)
        self._splits: dict[str, list[Case]] | None = None
        self._folds: Folds | None = None
        self._canvas: Canvas | None = None
        self._loaded: dict[Path, PreprocessedSubject] = {}
        # Mapped references in the file grid, re-used across validations (they are re-read from disk otherwise);
        # bounded so a large test split cannot fill memory.
        self._references: dict[str, np.ndarray] = {}
        self.max_cached_references = 8

    # ---- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(_get(self.cfg, "name", "data"))

    @property
    def num_classes(self) -> int:
        return self.label_map.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.label_map.class_names)

    @property
    def cache_dir(self) -> Path:
        return self._cache.root

    @property
    def modalities(self) -> int:
        """Image channels per slice before 2.5D context (prepares the first subject when 4D is allowed)."""
        cases = self.cases("train") or self.cases("test")
        if not cases:
            raise DataError(f"data.layout of {self.name!r}: no cases in any split")
        if not self.allow_4d_channels:
            return len(cases[0].image_paths)
        return int(self.subject(cases[0]).image.shape[0])

    @property
    def in_channels(self) -> int:
        """Network input channels = (2 * context + 1) * modalities."""
        return (2 * self.context + 1) * self.modalities

    # ---- splits and subjects ----------------------------------------------------------------------
    def folds(self) -> Folds | None:
        """The cross-validation folds (``data.folds`` / ``data.splits_file``) in nnU-Net's format, else None."""
        if self._folds is None and (self.cfg.get("folds") is not None or self.cfg.get("splits_file")):
            pooled = self._pooled_cases()
            splits_file = self.cfg.get("splits_file")
            if splits_file:
                self._folds = read_splits_final(resolve_path(splits_file), [c.id for c in pooled])
                k = self.cfg.get("folds")
                if k is not None and int(k) != len(self._folds):
                    raise DataError(f"data.folds is {k} but {splits_file} holds {len(self._folds)} folds")
            else:
                self._folds = make_folds(pooled, int(self.cfg["folds"]), int(_get(self.cfg, "folds_seed", 0)))
        return self._folds

    def _pooled_cases(self) -> list[Case]:
        """Every labelled case of the layout, its splits pooled (what cross-validation partitions)."""
        layout = load_layout(self.cfg["layout"])
        pooled = [c for split in SPLITS for c in layout.get(split, []) if c.label_path is not None]
        if not pooled:
            raise DataError(f"data.folds: the layout of {self.name!r} has no labelled case to cross-validate")
        return pooled

    def _load_splits(self) -> dict[str, list[Case]]:
        if self._splits is None:
            folds = self.folds()
            if folds is not None:
                splits = apply_fold(self._pooled_cases(), folds, int(_get(self.cfg, "fold", 0)))
            else:
                splits = {k: list(v) for k, v in load_layout(self.cfg["layout"]).items()}
            unknown = set(splits) - set(SPLITS)
            if unknown:
                raise DataError(f"data.layout: unknown splits {sorted(unknown)}; expected {SPLITS}")
            splits.setdefault("train", [])
            splits.setdefault("test", [])
            if "val" not in splits:
                n_val = self._validation_size(len(splits["train"]))
                if n_val > 0:
                    splits["train"], splits["val"] = split_validation(
                        splits["train"], n_val, int(_get(self.cfg, "val_seed", 0))
                    )
                else:
                    splits["val"] = []
            self._splits = splits
        return self._splits

    def _validation_size(self, n_train: int) -> int:
        """`val_subjects` when set (an integer wins), else `val_fraction` of the training subjects (at least 1),
        or 0 with a message when there are fewer than MIN_TRAIN_FOR_VALIDATION training subjects."""
        explicit = self.cfg.get("val_subjects")
        if explicit is not None:
            return int(explicit)
        fraction = self.cfg.get("val_fraction")
        if fraction is None or float(fraction) <= 0:
            return 0
        if not 0 < float(fraction) < 1:
            raise DataError(f"data.val_fraction: expected a fraction in (0, 1), got {fraction}")
        if n_train < MIN_TRAIN_FOR_VALIDATION:
            print(
                f"validation is off: {n_train} training subject(s) of {self.name!r} is fewer than "
                f"{MIN_TRAIN_FOR_VALIDATION} (set data.val_subjects to force it)",
                file=sys.stderr,
            )
            return 0
        return max(1, int(round(float(fraction) * n_train)))

    def cases(self, split: str) -> list[Case]:
        """The raw cases of `split` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise DataError(f"split {split!r}: expected one of {SPLITS}")
        return list(self._load_splits()[split])

    def subject(self, case: Case) -> PreprocessedSubject:
        """One case, preprocessed and cached on first use (memory-mapped)."""
        path = self._cache.entry_path(case)
        if path not in self._loaded:
            self._loaded[path] = self._cache.get(case)
        return self._loaded[path]

    def prepare(self) -> None:
        """Read, preprocess and cache every subject of every split (idempotent; cheap when cached)."""
        for split in SPLITS:
            for case in self.cases(split):
                self.subject(case)

    def subjects(self, split: str) -> list[PreprocessedSubject]:
        """Preprocessed (memory-mapped) subjects of `split`, prepared on first use."""
        return [self.subject(c) for c in self.cases(split)]

    # ---- the canvas ----------------------------------------------------------------------------
    @property
    def canvas(self) -> Canvas | None:
        """In-plane size (H, W) every slice is padded to, in training, evaluation and prediction alike: the
        largest in-plane size of the training subjects (equal to `preprocess.pad_size` when that is set). A
        trained run stores it in its checkpoints and `set_canvas` restores it (so prediction needs no training
        data). None when there is neither a training split nor a stored canvas: slices are then not padded."""
        if self._canvas is None and self.cases("train"):
            self._canvas = canvas_of(self.subjects("train"))
        return self._canvas

    def set_canvas(self, canvas: Sequence[int] | None) -> None:
        """Use the canvas a run was trained with (from its checkpoint); None keeps the computed one."""
        if canvas is not None:
            if len(canvas) != 2 or any(int(c) < 1 for c in canvas):
                raise DataError(f"canvas: expected [H, W] > 0, got {list(canvas)}")
            self._canvas = (int(canvas[0]), int(canvas[1]))

    # ---- training ------------------------------------------------------------------------------
    def train_dataset(self) -> SliceDataset:
        """Augmented training slices of the train split (reproducible per seed, epoch and index)."""
        subjects = self.subjects("train")
        if not subjects:
            raise DataError(f"data.layout of {self.name!r}: the train split is empty")
        return SliceDataset(
            subjects,
            context=self.context,
            augment=build_augmentation(self.augment_cfg),
            normalize=self.normalize,
            seed=self.seed,
            min_foreground=self.min_foreground,
            foreground_oversample=self.foreground_oversample,
            canvas=self.canvas,
        )

    def val_dataset(self) -> SliceDataset | None:
        """Validation slices (no augmentation, no slice skipping or oversampling), for a validation loss;
        None without validation subjects. Volumetric validation Dice uses `subjects("val")` + `eval_slices`.
        """
        subjects = self.subjects("val")
        if not subjects:
            return None
        return SliceDataset(
            subjects, context=self.context, normalize=self.normalize, seed=self.seed, canvas=self.canvas
        )

    def train_loader(
        self,
        dataset: SliceDataset | None = None,
        epoch: int = 0,
        iters_per_epoch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        worker_init_fn: Callable[[int], None] | None = None,
    ) -> DataLoader:
        """The training DataLoader, set to `epoch`: sample order from `EpochSampler` (seed, epoch), augmentation
        draws from (seed, epoch, index), so an epoch is the same whatever the number of workers.

        `iters_per_epoch` (batches per rank; None: one pass over the dataset) fixes the epoch length; under DDP
        `rank` takes every `world_size`-th sample of the epoch. For the next epoch, or to resume inside one, call
        ``loader.sampler.set_epoch(epoch, start)`` and ``dataset.set_epoch(epoch)``. Pinned memory
        (`data.loader.pin_memory`) only on a CUDA `device`. `worker_init_fn` runs in each worker process (the
        trainer's test-only fault hook, scseg.engine.faults); it draws nothing, so batches stay the same.
        """
        dataset = dataset if dataset is not None else self.train_dataset()
        num_samples = None if iters_per_epoch is None else int(iters_per_epoch) * self.batch_size * world_size
        sampler = EpochSampler(len(dataset), self.seed, num_samples, rank, world_size)
        sampler.set_epoch(int(epoch))
        dataset.set_epoch(int(epoch))
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.device(device).type == "cuda",
            drop_last=False,
            persistent_workers=False,
            worker_init_fn=worker_init_fn,
        )

    def class_statistics(self) -> ClassStatistics:
        """Summed per-class voxel / slice-voxel counts of the training subjects (cached per subject)."""
        return class_statistics_of(self.subjects("train"), self.class_names)

    def class_weights(self) -> torch.Tensor:
        """Median-frequency class weights of the training split, float32 (K,)."""
        return torch.as_tensor(self.class_statistics().weights(), dtype=torch.float32)

    # ---- evaluation and prediction ---------------------------------------------------------------
    def eval_slices(self, subject: PreprocessedSubject) -> SubjectSlices:
        """The subject's slices in order, on the training canvas, normalised, without augmentation."""
        return SubjectSlices(subject, context=self.context, normalize=self.normalize, canvas=self.canvas)

    def reference(self, subject: PreprocessedSubject) -> np.ndarray:
        """The label-MAPPED reference in the file's own grid (read from the label file, then kept for re-use)."""
        key = str(subject.id)
        if key in self._references:
            return self._references[key]
        reference = self._read_reference(subject)
        if len(self._references) < self.max_cached_references:
            self._references[key] = reference
        return reference

    def _read_reference(self, subject: PreprocessedSubject) -> np.ndarray:
        meta = subject.meta
        if meta.label_path is None:
            raise DataError(f"subject {subject.id}: has no label file, so there is no reference")
        case = Case(id=meta.id, image_paths=tuple(Path(p) for p in meta.image_paths), label_path=Path(meta.label_path))
        raw = read_subject(case, allow_4d_channels=self.allow_4d_channels)
        assert raw.label is not None
        mapped = np.asarray(self.label_map.apply(raw.label, meta.label_path))
        return to_original(mapped, raw.geometry)

    def prepare_images(self, paths: Sequence[str | os.PathLike], case_id: str | None = None) -> PreprocessedSubject:
        """Preprocess (and cache) an unlabeled image (one path per modality) for prediction.

        ``scseg.engine.inference.Predictor.predict`` segments the result in its file's grid.
        """
        if not paths:
            raise DataError("prepare_images: no image paths given")
        image_paths = tuple(Path(p) for p in paths)
        for p in image_paths:
            if not p.is_file():
                raise DataError(f"{p}: image file not found")
        case = Case(id=case_id or case_id_from_path(image_paths[0]), image_paths=image_paths, label_path=None)
        return self.subject(case)
