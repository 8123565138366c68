"""What identifies a run, torch-free: the config hash, the run-folder name and its parsing, and the settings an SE
comparison may vary.

The engine names run folders with it (``scseg.engine.run.identity``) and the report reads them back with it
(``scseg.report``), so the name pattern, the hash and its exclusion rules exist once. A run folder is
``<arch>-<se>[-<aggregation>]-seed<k>-<hash8>``: the middle part only for a module whose registry spec names a
``run_name_option`` (scSE: its aggregation), ``hash8`` the first eight hex characters of :func:`config_hash` of the
result-relevant config.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from scseg.plain import to_plain
from scseg.se_options import find_module, run_name_option

# Keys left out of the config hash: they change where and how verbosely a run is written, or how fast data is
# loaded, never the trained weights or the numbers (data order depends on seed/epoch/index, not on workers).
DEFAULT_HASH_EXCLUDE: tuple[str, ...] = (
    "paths",  # machine-specific folders (data root, output root)
    "hydra",  # Hydra's own runtime settings
    "resume",  # whether to resume, not what is trained
    "logger",  # TensorBoard / console logging
    "data.loader.num_workers",
    "data.loader.pin_memory",
    "data.loader.persistent_workers",
    "data.loader.prefetch_factor",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.tune_malloc",  # the C allocator's thresholds: speed, never results
    "trainer.checkpoint_every_n_steps",  # how often a run saves, not what it trains (resume is bit-identical)
    "trainer.checkpoint_every_minutes",
)
# Execution details that never change the trained weights beyond floating-point noise, on top of the list above:
# what a run's config hash (and so its folder name) leaves out.
HASH_EXCLUDE: tuple[str, ...] = DEFAULT_HASH_EXCLUDE + (
    "data.cache_dir",
    "trainer.num_threads",
    "trainer.eval_batch_size",
    "trainer.se_kernels",  # fused or ATen SE gates: the same function, rounding apart (scseg.models.se_fused)
    "trainer.se_kernels_build_timeout_s",
    # how the test split is scored (boundary metrics): never what is trained or which checkpoint is kept
    "eval.surface_metrics",
    "eval.nsd_tolerance_mm",
)
# What an SE comparison may vary between the cells of one architecture (besides HASH_EXCLUDE): the SE variant,
# its aggregation, reduction and positions (the whole ``se`` group and the architecture's default reduction),
# the seed, and the experiment's name.
COMPARISON_EXCLUDE: tuple[str, ...] = HASH_EXCLUDE + (
    "se",
    "model.se_reduction",
    "model.capacity_match",  # the capacity control is compared with the SE variants of its backbone
    "seed",
    "experiment_name",
)
# Keys added after run folders existed: at these values they leave the hash (and so every run folder's name)
# unchanged, so adding a knob never renames the runs of configs that do not use it.
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.slices.fallback_axis": "axial",
    "data.slices.anisotropy_threshold": 1.5,
    "data.val_fraction": None,
    # Cross-validation (scseg.data.folds): off, as in every earlier run; fold 0 and seed 0 are their defaults.
    "data.folds": None,
    "data.fold": 0,
    "data.folds_seed": 0,
    "data.splits_file": None,
    # SE placement: the paper's encoder + decoder blocks, as every earlier run. The identity
    # (scseg.engine.run.identity) also folds se.in_bottleneck into it and replaces se.reduction by the effective one
    # (model.se_reduction when null), so equal networks share a folder and the new model.se_reduction key never
    # renames a run.
    "se.positions": ["encoder", "decoder"],
    "model.se_reduction": None,
    # A factor on the SE gates (the gate-range control); 1 is the paper's block and every earlier run.
    "se.gate_scale": 1.0,
    # The capacity control (a network without SE widened to an SE variant's parameter count); null: none.
    "model.capacity_match": None,
    # Test-time mirroring also scores validation, so it picks the best checkpoint: hashed unless off; an eval group
    # left with nothing hashed (every earlier run had none) adds nothing.
    "eval.tta": "none",
    "eval": {},
    # Loss options against background flooding; the defaults are the loss every earlier run used.
    "loss.boundary_mode": "multiplicative",
    "loss.min_class_weight_ratio": 0.0,
    # How predictions return to a resampled file's grid; earlier runs copied arg-max labels by nearest neighbour.
    "trainer.eval_resample": "nearest",
}

# Execution settings that enter every hash at one fixed value, whatever they are set to: like trainer.num_threads
# they change results by floating-point noise only, but they were hashed before that was decided, so pinning them
# (rather than excluding them) keeps every earlier run folder's name.
HASH_PINNED: dict[str, Any] = {
    # channels-last memory format (1.1-1.4x faster CPU training for U-Net and FC-DenseNet; configs/trainer/cpu.yaml)
    "trainer.channels_last": False,
}

_NAME_PART = re.compile(r"^[A-Za-z0-9_.]+$")
# The one run-name pattern. Read leniently (any alphanumeric hash, scSE without its aggregation) so that folders
# written by hand or by older versions are still recognised; :func:`parse_run_name` adds the strict checks.
RUN_NAME = re.compile(
    r"^(?P<arch>[A-Za-z0-9_.]+)-(?P<se>[A-Za-z0-9_.]+)(?:-(?P<aggregation>[A-Za-z0-9_.]+))?"
    r"-seed(?P<seed>\d+)-(?P<hash>[0-9A-Za-z]+)$"
)
_HASH8 = re.compile(r"^[0-9a-f]{8}$")
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
_RESOLVER_CALL = re.compile(r"\$\{[\w.\-]*:")


# ---- the config hash ---------------------------------------------------------------------------------------------
def _excluded(path: str, exclude: tuple[str, ...]) -> bool:
    return any(path == key or path.startswith(key + ".") for key in exclude)


def _canonical(cfg: Any, root: DictConfig | None, path: str, exclude: tuple[str, ...]) -> Any:
    """Plain, resolved copy of ``cfg`` without excluded keys (interpolations handled as in :func:`config_hash`)."""
    if isinstance(cfg, Mapping):
        out = {}
        for key, value in cfg.items():
            child = f"{path}.{key}" if path else str(key)
            if _excluded(child, exclude):
                continue
            plain = HASH_PINNED[child] if child in HASH_PINNED else _canonical(value, root, child, exclude)
            if child in HASH_NEUTRAL_DEFAULTS and plain == HASH_NEUTRAL_DEFAULTS[child]:
                continue
            out[str(key)] = plain
        return out
    if isinstance(cfg, (list, tuple)):
        return [_canonical(value, root, f"{path}.{i}", exclude) for i, value in enumerate(cfg)]
    if isinstance(cfg, str) and root is not None and cfg == "???":
        raise ValueError(f"config_hash: {path!r} is missing (???); set it before hashing the config")
    if isinstance(cfg, str) and root is not None and "${" in cfg:
        targets = _INTERPOLATION.findall(cfg)
        keep_text = _RESOLVER_CALL.search(cfg) is not None or any(
            t.startswith(".") or _excluded(t, exclude) for t in targets
        )
        if keep_text:
            return cfg
        value = OmegaConf.select(root, path, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        return _canonical(value, None, path, exclude)
    if cfg is None or isinstance(cfg, (bool, int, float, str)):
        return cfg
    raise TypeError(f"config_hash: value of {path!r} has type {type(cfg).__name__}; expected plain config values")


def config_hash(cfg: Mapping | DictConfig, exclude: tuple[str, ...] = DEFAULT_HASH_EXCLUDE) -> str:
    """sha256 (64 hex chars) of the resolved config as canonical JSON (sorted keys), without ``exclude``.

    ``exclude`` holds dotted keys; a key excludes its whole subtree; absent keys are ignored. The defaults
    (:data:`DEFAULT_HASH_EXCLUDE`) only change where or how verbosely a run writes, or loader speed.
    Interpolations are resolved, except those that refer to an excluded key or call a resolver
    (``${paths.data}/malc``, ``${oc.env:X}``, ``${hydra:...}``) or are relative: they enter as their text, so
    that the hash does not depend on the machine. A ``???`` (missing) value raises an error.
    """
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
        plain = _canonical(raw, cfg, "", tuple(exclude))
    elif isinstance(cfg, Mapping):
        plain = _canonical(cfg, None, "", tuple(exclude))
    else:
        raise TypeError(f"config_hash expects a mapping or DictConfig; got {type(cfg).__name__}")
    try:
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"config_hash: config holds a non-finite float ({error})") from error
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def short_hash(full_hash: str, length: int = 8) -> str:
    """The first ``length`` hex characters of a :func:`config_hash`, as used in run names."""
    if not re.fullmatch(r"[0-9a-f]+", full_hash or "") or len(full_hash) < length:
        raise ValueError(f"expected a hex digest of at least {length} characters; got {full_hash!r}")
    return full_hash[:length]


# ---- what a comparison may vary ------------------------------------------------------------------------------------
def comparison_hash(cfg: DictConfig | Mapping) -> str:
    """sha256 of the config without :data:`COMPARISON_EXCLUDE` (same canonical form as the run's config hash)."""
    return config_hash(cfg, exclude=COMPARISON_EXCLUDE)


def comparable_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config (e.g. ``.hydra/config.yaml`` loaded) as ``{dotted key: value}`` without the keys a
    comparison may vary (:data:`COMPARISON_EXCLUDE`) and without new keys at their hash-neutral defaults, so two
    runs compare equal exactly when they were trained alike. Lists stay values (compared whole)."""
    config = to_plain(config)
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}{key}" if not prefix else f"{prefix}.{key}", value)
            return
        if (
            _excluded(prefix, COMPARISON_EXCLUDE)
            or prefix in HASH_PINNED
            or (prefix in HASH_NEUTRAL_DEFAULTS and node == HASH_NEUTRAL_DEFAULTS[prefix])
        ):
            return
        out[prefix] = node

    walk("", config)
    return out


# ---- run names -----------------------------------------------------------------------------------------------------
def run_name(arch: str, se: str, aggregation: str | None, seed: int, hash8: str) -> str:
    """``<arch>-<se>[-<option>]-seed<k>-<hash8>``; ``aggregation`` is the value of the module's
    ``run_name_option`` (scSE's aggregation) and appears only for a module that has one."""
    for label, part in (("arch", arch), ("se", se)):
        if not _NAME_PART.match(str(part)):
            raise ValueError(f"run_name: {label} {part!r} must match [A-Za-z0-9_.]+ (no '-', '/' or spaces)")
    parts = [arch, se]
    option = run_name_option(se)
    if option is not None:
        if aggregation is None or not _NAME_PART.match(str(aggregation)):
            raise ValueError(f"run_name: se {se!r} needs its {option} matching [A-Za-z0-9_.]+; got {aggregation!r}")
        parts.append(aggregation)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"run_name: seed must be a non-negative int; got {seed!r}")
    if not _HASH8.match(str(hash8)):
        raise ValueError(f"run_name: hash8 must be 8 lowercase hex characters; got {hash8!r}")
    return "-".join([*parts, f"seed{seed}", hash8])


def read_run_name(name: str) -> dict | None:
    """``{arch, se, aggregation, seed, hash}`` of a run-folder name read leniently (what the report accepts), or None.

    Lenient: any alphanumeric hash, and an scSE name may lack its aggregation (None here; older folders).
    Still refused: an SE module scseg does not know, and a middle part on a module without a ``run_name_option``.
    """
    match = RUN_NAME.match(name)
    if (
        match is None
        or find_module(match["se"]) is None
        or (match["aggregation"] is not None and run_name_option(match["se"]) is None)
    ):
        return None
    return {**match.groupdict(), "seed": int(match["seed"])}


def parse_run_name(name: str) -> dict:
    """Strict inverse of :func:`run_name`: ``{arch, se, aggregation, seed, hash8}`` (aggregation None unless the
    module has a ``run_name_option``, as scSE)."""
    match = RUN_NAME.match(name)
    if (
        match is None
        or not _HASH8.match(match["hash"])
        or (run_name_option(match["se"]) is not None) != (match["aggregation"] is not None)
    ):
        raise ValueError(f"{name!r} is not a run name of the form <arch>-<se>[-<aggregation>]-seed<k>-<hash8>")
    parts = match.groupdict()
    return {
        "arch": parts["arch"],
        "se": parts["se"],
        "aggregation": parts["aggregation"],
        "seed": int(parts["seed"]),
        "hash8": parts["hash"],
    }


__all__ = [
    "COMPARISON_EXCLUDE",
    "DEFAULT_HASH_EXCLUDE",
    "HASH_EXCLUDE",
    "HASH_NEUTRAL_DEFAULTS",
    "HASH_PINNED",
    "RUN_NAME",
    "comparable_settings",
    "comparison_hash",
    "config_hash",
    "parse_run_name",
    "read_run_name",
    "run_name",
    "short_hash",
]
