"""The run spec: a composed config resolved ONCE into typed settings, then passed instead of the config tree.

Why: the trainer, the summary, TensorBoard logging and run loading each used to dig through the raw config and
recompute the effective SE settings (the reduction a ``null`` falls back to, the positions the alias adds). Here
they are resolved once, after the config check, into frozen dataclasses whose fields are the checked schema's
(:mod:`scseg.config.check`: the same dataclasses validate the YAML and type the spec, so the keys are written
once). Groups that are handed to a factory as they stand (loss, optimizer, scheduler, data) stay plain mappings.

The run's identity (config hash, folder name, comparison hash) is computed from the config itself
(:func:`scseg.engine.run.identity`: interpolations kept as text), never from the spec, so no run folder changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from scseg.config.check import EvalSchema, LoggerSchema, TrainerSchema
from scseg.engine.distributed import pick_backend, pick_device
from scseg.se_options import find_module, se_settings, uses_option


@dataclass(frozen=True)
class ModelSpec:
    """The network: architecture, its own keyword arguments and the effective SE settings."""

    arch: str
    kwargs: dict[str, Any]
    se: str = "none"
    aggregation: str = "add"
    reduction: int = 2
    positions: tuple[str, ...] = ("encoder", "decoder")
    gate_scale: float = 1.0
    capacity_match: str | None = None
    # the module's own options beyond the shared se.reduction / se.aggregation / se.gate_scale (registry spec)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def aggregation_used(self) -> str | None:
        """The scSE aggregation, None for the modules without that option."""
        return self.aggregation if uses_option(self.se, "aggregation") else None

    @property
    def reduction_used(self) -> int | None:
        """The reduction, None for the modules without that option."""
        return self.reduction if uses_option(self.se, "reduction") else None


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, resolved: see the module docstring."""

    experiment: str
    seed: int
    test_split: str
    model: ModelSpec
    trainer: TrainerSchema
    logger: LoggerSchema
    eval: EvalSchema
    data: dict[str, Any]
    loss: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    config_yaml: str  # the resolved config, stored in checkpoints and shown in TensorBoard

    @property
    def memory_format(self) -> torch.memory_format:
        """The activations' memory layout on the CPU (``trainer.channels_last``)."""
        return torch.channels_last if self.trainer.channels_last else torch.contiguous_format

    @property
    def on_cpu(self) -> bool:
        return str(self.trainer.device).startswith("cpu")

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> RunSpec:
        """Resolve a composed (and checked) config. Keys a run folder from an older version lacks take the
        defaults earlier runs had (``trainer.channels_last`` false, ``eval_resample`` nearest, ...)."""
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(dict(cfg))
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(plain, dict)
        settings = se_settings(plain)
        model = dict(plain["model"])
        arch = str(model.pop("arch"))
        model.pop("se_reduction", None)  # the architecture's default reduction: se_settings applied it
        capacity_match = model.pop("capacity_match", None)
        se = plain.get("se") or {}
        module = find_module(str(se.get("name", "none")))
        shared = ("reduction", "aggregation", "gate_scale")
        own = [o for o in (module.option_names if module is not None else ()) if o not in shared]
        return cls(
            experiment=str(plain.get("experiment_name", "default")),
            seed=int(plain.get("seed", 0)),
            test_split=str(plain.get("test_split", "test")),
            model=ModelSpec(
                arch=arch,
                kwargs=model,
                se=str(se.get("name", "none")),
                aggregation=str(se.get("aggregation", "add")),
                reduction=int(settings["se_reduction"]),
                positions=tuple(settings["se_positions"]),
                gate_scale=float(settings["se_gate_scale"]),
                capacity_match=None if capacity_match is None else str(capacity_match),
                options={o: se[o] for o in own if se.get(o) is not None},
            ),
            trainer=_resolved(_schema(TrainerSchema, plain.get("trainer") or {}, OLD_TRAINER_DEFAULTS)),
            logger=_schema(LoggerSchema, plain.get("logger") or {}, OLD_LOGGER_DEFAULTS),
            eval=_schema(EvalSchema, plain.get("eval") or {}, OLD_EVAL_DEFAULTS),
            data=dict(plain.get("data") or {}),
            loss=dict(plain.get("loss") or {}),
            optimizer=dict(plain.get("optimizer") or {}),
            scheduler=dict(plain.get("scheduler") or {}),
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        )


# What a run folder written before a key existed ran with (its .hydra/config.yaml lacks the key).
OLD_TRAINER_DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "iters_per_epoch": None,
    "val_every": 1,
    "early_stopping_patience": None,
    "grad_clip_norm": None,
    "amp": False,
    "amp_dtype": "bfloat16",
    "compile": False,
    "channels_last": False,
    "deterministic": False,
    "num_threads": None,
    "tune_malloc": True,
    "se_kernels": "eager",
    "se_kernels_build_timeout_s": 300.0,
    "progress_bar": "auto",
    "eval_batch_size": 32,
    "eval_resample": "nearest",
    "checkpoint_every_n_steps": None,
    "checkpoint_every_minutes": None,
    "distributed": False,
    "backend": "gloo",
}
OLD_LOGGER_DEFAULTS: dict[str, Any] = {"enabled": True, "image_slices": 0, "log_every_n_steps": 10, "gate_maps": True}
# Runs from before the eval group: re-evaluation gives them the boundary metrics at the default tolerance.
OLD_EVAL_DEFAULTS: dict[str, Any] = {"surface_metrics": True, "nsd_tolerance_mm": 1.0, "tta": "none"}


def nsd_tolerances(setting: float | Mapping[str, float], class_names: Sequence[str]) -> list[float]:
    """``eval.nsd_tolerance_mm`` per class: one number for all, or ``{structure: mm, default: mm}`` (a structure
    not named takes ``default``, else 1 mm). A name that is no class is an error naming it."""
    if not isinstance(setting, Mapping):
        return [float(setting)] * len(class_names)
    unknown = sorted(set(setting) - set(class_names) - {"default"})
    if unknown:
        raise ValueError(
            f"eval.nsd_tolerance_mm names {unknown}, which are not classes of this run: {list(class_names)}"
        )
    default = float(setting.get("default", 1.0))
    return [float(setting.get(name, default)) for name in class_names]


def _resolved(trainer: TrainerSchema) -> TrainerSchema:
    """``auto`` device and backend as what this machine has (scseg.engine.distributed)."""
    device = pick_device(str(trainer.device))
    return dataclasses.replace(trainer, device=device, backend=pick_backend(str(trainer.backend), device))


def _schema(kind: type, values: Mapping[str, Any], old_defaults: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    merged = {
        **{k: v for k, v in old_defaults.items() if k in names},
        **{k: v for k, v in values.items() if k in names},
    }
    return kind(**merged)


__all__ = ["ModelSpec", "RunSpec", "nsd_tolerances"]
