"""Start-up validation of a composed config: unknown keys and wrong types fail at once, naming the key.

Hydra composes whatever YAML it is given; a typo such as ``trainer.max_epoch=5`` would otherwise be silently
ignored. Each group is checked against a schema: the model group against the architecture's own keyword
arguments (so the YAML and the constructor can never drift apart), ``se`` against the module registry, the others
against the structured-config dataclasses of :mod:`scseg.config.schema` (registered in Hydra's ConfigStore).

The lists of valid values that only configs name live here too (:data:`RESUME_MODES`, :data:`SCHEDULER_INTERVALS`,
:data:`AMP_DTYPES`); the engine reads them from here.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from scseg.config.compose import CONFIG_DIR
from scseg.config.schema import (
    ConfigError,
    EvalSchema,
    LoggerSchema,
    RootSchema,
    SESchema,
    TrainerSchema,
)
from scseg.config.schema import (
    check_node as _check_node,
)
from scseg.data.preprocess import RESTORE_MODES
from scseg.data.types import SPLITS
from scseg.losses import create_loss_from_config
from scseg.models import ARCHITECTURES, architecture_positions, capacity_modules
from scseg.se_options import (
    AGGREGATIONS,
    ALL_SE_POSITIONS,
    SE_KERNEL_MODES,
    SKIP_POSITIONS,
    check_module_positions,
    module_names,
    module_spec,
    module_specs,
    resolve_positions,
)

# ``resume``: continue a run folder's checkpoint when its config hash matches (auto), never, or fail without one.
RESUME_MODES: tuple[str, ...] = ("auto", "never", "must")
# ``scheduler.interval``, read by the trainer itself (everything else goes to the scheduler's constructor): step
# the learning-rate scheduler per epoch, per optimizer step, or per validation (with the validation Dice).
SCHEDULER_INTERVALS: tuple[str, ...] = ("epoch", "iteration", "validation")
# ``trainer.amp_dtype``: the autocast dtype of mixed precision on CUDA.
AMP_DTYPES: tuple[str, ...] = ("bfloat16", "float16")


# Shared ``se`` keys a config may leave out, and what an absent one means (scseg.se_options.se_settings agrees).
SE_SHARED_DEFAULTS: dict[str, Any] = {"reduction": None, "aggregation": "add", "gate_scale": 1.0}


_CHOICES = {
    "se.aggregation": AGGREGATIONS,
    "trainer.amp_dtype": AMP_DTYPES,
    "trainer.eval_resample": RESTORE_MODES,
    "trainer.se_kernels": SE_KERNEL_MODES,
    "trainer.backend": ("auto", "gloo", "nccl"),
    "trainer.amp": (True, False, "auto"),
    "eval.tta": ("none", "mirror", "mirror_lr"),
    "resume": RESUME_MODES,
    "test_split": SPLITS,
    "scheduler.interval": SCHEDULER_INTERVALS,
}


def _check_model(node: dict) -> None:
    arch = node.get("arch")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch is {arch!r}; registered architectures: {', '.join(ARCHITECTURES)}")
    params = inspect.signature(ARCHITECTURES[arch]).parameters  # a class's __init__ or a preset's own signature
    reserved = {"in_channels", "num_classes", "se_factory", "se_in_bottleneck", "se_positions"}
    valid = sorted((set(params) - reserved) | {"se_reduction", "capacity_match"})
    for key, value in node.items():
        if key == "arch":
            continue
        if key == "se_reduction":  # the architecture's default cSE reduction, read by build_model
            _check_reduction("model.se_reduction", value)
            continue
        if key == "capacity_match":  # the capacity control, read by build_model
            matchable = capacity_modules()
            if value is not None and value not in matchable:
                raise ConfigError(f"model.capacity_match is {value!r}; valid choices: null, {', '.join(matchable)}")
            continue
        if key not in valid:
            raise ConfigError(f"unknown config key 'model.{key}' for arch {arch!r}; valid keys: {', '.join(valid)}")
        default = params[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"config key 'model.{key}' must be a boolean, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config key 'model.{key}' must be a number, got {value!r}")
            if isinstance(default, int) and isinstance(value, float):
                raise ConfigError(f"config key 'model.{key}' must be an integer, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"config key 'model.{key}' must be a string, got {value!r}")
        if isinstance(default, (tuple, list)) and not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key 'model.{key}' must be a list, got {value!r}")


def _check_reduction(key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"config key '{key}' must be a positive integer or null, got {value!r}")


def _check_se_group(node: dict) -> None:
    """The ``se`` group: ``se.name`` a registered module, the keys every ``se`` config has
    (:class:`SESchema`), and the module's own options, each checked against its registry spec. A key that is an
    option of another module only is named with the modules it belongs to."""
    if not isinstance(node, dict):
        raise ConfigError(f"config group 'se' must be a mapping, got {node!r}")
    names = module_names()
    name = node.get("name")
    if name not in names:
        raise ConfigError(f"config key 'se.name' is {name!r}; valid choices: {', '.join(names)}")
    spec = module_spec(name)
    base = {f.name for f in fields(SESchema)}
    for key in node:
        if key in base or key in spec.option_names:
            continue
        owners = [s.name for s in module_specs() if key in s.option_names]
        if owners:
            raise ConfigError(
                f"config key 'se.{key}' is an option of {', '.join(owners)}, not of se.name={name!r}; its options: "
                f"{', '.join(spec.option_names) or '(none)'}"
            )
        raise ConfigError(
            f"unknown config key 'se.{key}'; valid keys: {', '.join(sorted(base | set(spec.option_names)))}"
        )
    _check_node("se.", {**SE_SHARED_DEFAULTS, **{k: v for k, v in node.items() if k in base}}, SESchema)
    for option in spec.options:
        value = node.get(option.name)
        if value is None:  # absent: the module's default; se.reduction null: the architecture's
            continue
        try:
            option.check(value, name)
        except ValueError as exc:
            raise ConfigError(f"config key 'se.{option.name}' is invalid: {exc}") from None


def _check_se(node: dict) -> None:
    """``se.reduction`` positive (or null); ``se.positions`` a list of known positions."""
    _check_reduction("se.reduction", node.get("reduction"))
    positions = node["positions"]
    if not isinstance(positions, list) or not all(isinstance(p, str) for p in positions):
        raise ConfigError(f"config key 'se.positions' must be a list such as [encoder, decoder], got {positions!r}")
    unknown = [p for p in positions if p not in ALL_SE_POSITIONS]
    if unknown:
        raise ConfigError(
            f"config key 'se.positions' holds {', '.join(map(repr, unknown))}; "
            f"valid positions: {', '.join(ALL_SE_POSITIONS)}"
        )


def _check_positions_of_arch(se: dict, model: dict) -> None:
    """Positions the architecture does not have would build nothing there: refused, naming the ones it has. A skip
    module takes exactly ``[skip]`` and a block module no ``skip``; a skip module as ``model.capacity_match`` is
    counted on every skip whatever ``se.positions`` (those of ``none``) says."""
    capacity = model.get("capacity_match")
    if se["name"] == "none" and capacity is None:
        return
    chosen = resolve_positions(se["positions"], bool(se["in_bottleneck"]))
    if se["name"] == "none" and capacity in module_names(placement="skip"):
        chosen = SKIP_POSITIONS
    try:
        check_module_positions(se["name"] if se["name"] != "none" else capacity, chosen)
    except ValueError as exc:
        raise ConfigError(f"config key 'se.positions' is invalid: {exc}") from None
    arch = model["arch"]
    missing = [p for p in chosen if p not in architecture_positions(arch)]
    if missing:
        raise ConfigError(
            f"config key 'se.positions' holds {', '.join(map(repr, missing))}, which model.arch={arch!r} does not "
            f"have; its positions: {', '.join(architecture_positions(arch))}"
        )


def _check_eval(node: dict) -> None:
    tolerance = node["nsd_tolerance_mm"]
    values = tolerance.values() if isinstance(tolerance, dict) else [tolerance]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(
            f"config key 'eval.nsd_tolerance_mm' must be a number of mm >= 0 or a mapping of structure names to "
            f"such numbers (with an optional 'default'), got {tolerance!r}"
        )


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first unknown, missing or mistyped key of ``cfg``."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # interpolation errors name the key themselves
        raise ConfigError(f"config does not resolve: {' '.join(str(exc).split())}") from exc
    root = {k: container.get(k) for k in (f.name for f in fields(RootSchema))}
    _check_node("", root, RootSchema)
    for group, schema in (("se", SESchema), ("trainer", TrainerSchema), ("logger", LoggerSchema)):
        if group not in container:
            raise ConfigError(f"missing config group '{group}'")
        if group == "se":
            _check_se_group(container[group])
        else:
            _check_node(f"{group}.", container[group], schema)
    _check_se(container["se"])
    _check_model(container["model"])
    _check_positions_of_arch(container["se"], container["model"])
    if "eval" not in container:
        raise ConfigError("missing config group 'eval'")
    _check_node("eval.", container["eval"], EvalSchema)
    _check_eval(container["eval"])
    for key in ("checkpoint_every_n_steps", "checkpoint_every_minutes"):
        value = container["trainer"][key]
        if value is not None and value <= 0:
            raise ConfigError(f"config key 'trainer.{key}' must be positive or null; got {value!r}")
    for key, choices in _CHOICES.items():
        absent = SE_SHARED_DEFAULTS.get(key[len("se.") :]) if key.startswith("se.") else None
        value = OmegaConf.select(cfg, key, default=absent)
        if value not in choices:
            raise ConfigError(f"config key '{key}' is {value!r}; valid choices: {', '.join(choices)}")
    for group in ("optimizer", "scheduler"):
        if "_target_" not in container.get(group, {}):
            raise ConfigError(f"config group '{group}' needs a _target_ (a class path) and _partial_: true")
    _dry_build(container)
    for group in ("data", "loss", "paths"):
        if group not in container:
            raise ConfigError(f"missing config group '{group}'")
    _check_data(container["data"])


def _dry_build(container: dict) -> None:
    """Build optimizer, scheduler and loss on a dummy parameter, so a bad value fails now, not after data prep."""

    def attempt(group: str, build):
        try:
            return build()
        except Exception as exc:  # constructors raise TypeError, ValueError, ImportError, InstantiationException
            detail = " ".join(str(exc).split())
            raise ConfigError(
                f"config group '{group}' ({container[group].get('_target_', container[group].get('name'))}) "
                f"is invalid: {detail}"
            ) from exc

    for group in ("optimizer", "scheduler"):
        _check_against_signature(group, container[group])
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = attempt("optimizer", lambda: instantiate(container["optimizer"])(params=params))
    scheduler = {k: v for k, v in container["scheduler"].items() if k != "interval"}
    if scheduler.get("total_iters", 0) is None:
        scheduler["total_iters"] = 1
    built = attempt("scheduler", lambda: instantiate(scheduler)(optimizer=optimizer))
    optimizer.step()  # no gradients: a no-op that keeps torch from warning about the order of the two steps
    plateau = isinstance(built, torch.optim.lr_scheduler.ReduceLROnPlateau)
    attempt("scheduler", lambda: built.step(0.0) if plateau else built.step())
    attempt("loss", lambda: create_loss_from_config(container["loss"]))


def _check_against_signature(group: str, node: dict) -> None:
    """Keys of a ``_target_`` node must be constructor arguments, numbers where the constructor's default is one."""
    try:
        target = get_class(node["_target_"])
    except Exception as exc:
        raise ConfigError(f"config key '{group}._target_' ({node['_target_']}) cannot be imported: {exc}") from exc
    params = inspect.signature(target.__init__).parameters
    for key, value in node.items():
        if key in ("_target_", "_partial_", "interval"):
            continue
        if key not in params:
            valid = ", ".join(p for p in params if p not in ("self", "params", "optimizer"))
            raise ConfigError(f"unknown config key '{group}.{key}' for {node['_target_']}; valid keys: {valid}")
        default = params[key].default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and isinstance(value, (str, bool)):
            raise ConfigError(f"config key '{group}.{key}' must be a number, got {value!r}")


# Keys a dataset config adds next to those of configs/data/common.yaml (layout keys differ per layout type).
_DATASET_KEYS = {"name", "layout", "label_map", "val_subjects", "val_fraction", "val_seed"}


def _check_data(node: dict) -> None:
    """The data node against configs/data/common.yaml: unknown keys and numbers given as text fail by name."""
    common = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / "common.yaml"), resolve=False)

    def walk(prefix: str, given: dict, reference: dict) -> None:
        for key, value in given.items():
            if key not in reference:
                if prefix == "data." and key in _DATASET_KEYS:
                    continue
                valid = sorted(reference) + (sorted(_DATASET_KEYS) if prefix == "data." else [])
                raise ConfigError(f"unknown config key '{prefix}{key}'; valid keys: {', '.join(valid)}")
            expected = reference[key]
            if isinstance(expected, dict) and isinstance(value, dict):
                walk(f"{prefix}{key}.", value, expected)
            elif isinstance(expected, bool) and not isinstance(value, bool):
                raise ConfigError(f"config key '{prefix}{key}' must be true or false, got {value!r}")
            elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
                if isinstance(value, (str, bool)):
                    raise ConfigError(f"config key '{prefix}{key}' must be a number, got {value!r}")

    walk("data.", node, common)
