"""Every config composes: experiments x model x SE instantiate their networks; launchers compose; bad keys fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from scseg.config import CONFIG_DIR, compose_train_config
from scseg.config.check import ConfigError, validate_config
from scseg.engine.run import build_model
from scseg.engine.spec import RunSpec

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
MODELS = ["unet", "sdnet", "fcdensenet"]
SE = ["none", "cse", "sse", "scse"]
# Classes and input channels of each experiment's dataset (label map size; one modality, no 2.5D context).
NUM_CLASSES = {"demo": 11, "paper_malc": 28, "paper_chaos": 5}


def test_experiments_exist():
    assert {"demo", "paper_malc", "paper_chaos"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("se", SE)
def test_experiment_composes_and_builds_model(experiment, model, se):
    cfg = compose_train_config([f"experiment={experiment}", f"model={model}", f"se={se}"])
    validate_config(cfg)
    assert cfg.experiment_name == experiment
    assert cfg.model.arch == model and cfg.se.name == se
    net = build_model(RunSpec.from_config(cfg), num_classes=NUM_CLASSES.get(experiment, 4), in_channels=1)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_user_override_works_as_expected():
    cfg = compose_train_config(
        ["experiment=paper_malc", "model=sdnet", "se=scse", "se.aggregation=max", "optimizer.lr=3e-4"]
    )
    assert cfg.model.arch == "sdnet" and cfg.model.filters == 64 and cfg.model.kernel_size == 7
    assert cfg.se.aggregation == "max" and cfg.optimizer.lr == 3e-4
    assert cfg.data.name == "malc" and cfg.trainer.device == "cuda"


def test_demo_uses_small_widths_for_every_architecture():
    assert compose_train_config(["experiment=demo", "model=unet"]).model.filters == 16
    assert compose_train_config(["experiment=demo", "model=sdnet"]).model.filters == 16
    assert compose_train_config(["experiment=demo", "model=fcdensenet"]).model.growth_rate == 8


@pytest.mark.parametrize(
    "launcher, target",
    [
        ("joblib", "JoblibLauncher"),
        ("slurm", "SlurmLauncher"),
        ("slurm_cpu", "SlurmLauncher"),
        ("submitit_local", "LocalLauncher"),
    ],
)
def test_launchers_compose(launcher, target):
    cfg = compose_train_config([f"launcher={launcher}", "experiment=demo"], return_hydra_config=True)
    assert target in cfg.hydra.launcher._target_
    if launcher == "joblib":
        assert cfg.hydra.launcher.n_jobs == 2 and cfg.trainer.num_threads == 1 and cfg.data.loader.num_workers == 0


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "loss", "trainer", "logger", "data"])
def test_every_group_option_composes(group):
    for option in sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")):
        if group == "data" and option == "common":
            continue
        cfg = compose_train_config([f"{group}={option}"])
        if group == "data" and OmegaConf.is_missing(cfg.data.layout, "root"):
            # These layouts need the user's folder: the error names the missing setting.
            with pytest.raises(ConfigError, match="root"):
                validate_config(cfg)
            continue
        validate_config(cfg)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.trainer.__setitem__("max_epoch", 5), "trainer.max_epoch"),
        (lambda c: c.trainer.__setitem__("max_epochs", "ten"), "trainer.max_epochs"),
        (lambda c: c.model.__setitem__("filter", 8), "model.filter"),
        (lambda c: c.model.__setitem__("filters", 8.5), "model.filters"),
        (lambda c: c.se.__setitem__("name", "sce"), "se.name"),
        (lambda c: c.se.__setitem__("aggregation", "avg"), "se.aggregation"),
        (lambda c: c.__setitem__("resume", "maybe"), "resume"),
        (lambda c: c.trainer.__setitem__("eval_resample", "cubic"), "trainer.eval_resample"),
    ],
)
def test_bad_keys_fail_naming_the_key(mutate, message):
    cfg = compose_train_config([])
    with open_dict(cfg):
        mutate(cfg)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(cfg)


@pytest.mark.parametrize("preset", ["fcdensenet56", "fcdensenet67", "fcdensenet103"])
def test_fcdensenet_presets_are_checked_against_their_own_signature(preset):
    """A preset is a registered function whose keyword arguments are the config keys: its config validates, a
    typo or a non-list layer count fails naming the key."""
    cfg = compose_train_config([f"model={preset}"])
    validate_config(cfg)
    for key, value, message in (("growth_rat", 8, "model.growth_rat"), ("down_layers", 4, "model.down_layers")):
        bad = cfg.copy()
        with open_dict(bad):
            bad.model[key] = value
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            validate_config(bad)


def test_cfg_job_prints_composed_config():
    exe = Path(sys.executable).with_name("scseg-train")
    proc = subprocess.run([str(exe), "--cfg", "job", "model=sdnet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "arch: sdnet" in proc.stdout and "optimizer:" in proc.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=abc", "optimizer"),
        ("scheduler.gamma=x", "scheduler.gamma"),
        ("+optimizer.betas2=3", "optimizer.betas2"),
        ("loss.boundary_weight=-1", "loss"),
        ("scheduler=plateau scheduler.factor=2", "scheduler"),
        ("loss.class_weighting=inverse", "loss.class_weighting"),
        ("+data.slices.axiss=coronal", "data.slices.axiss"),
        ("scheduler.interval=weekly", "scheduler.interval"),
        ("data.loader.batch_size=abc", "data.loader.batch_size"),
    ],
)
def test_bad_optimizer_scheduler_loss_values_fail_at_start(override, message):
    cfg = compose_train_config(override.split())
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(cfg)
