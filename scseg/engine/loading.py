"""A finished run folder back in memory: its resolved config, data module, model and checkpoint.

``scseg-evaluate``, ``scseg-predict`` and ``scseg-gates`` all start from a run folder; this is the one way they
rebuild it, so each sees the same network on the same canvas as training did.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from scseg.data.datamodule import DataModule
from scseg.engine import checkpoint as ckpt
from scseg.engine.run import build_datamodule, build_model
from scseg.engine.trainer import memory_format_of


def load_run(run_dir: Path, checkpoint: str = "best") -> tuple[DictConfig, DataModule, torch.nn.Module, dict]:
    """(config, data module, model with the checkpoint's weights, checkpoint state) of a run folder.

    Reads ``.hydra/config.yaml`` and ``checkpoints/<checkpoint>.pt`` (``weights_only``, never executing code) and
    restores the slice canvas the network was trained on from the checkpoint, so prediction pads like training
    did whatever data is present on this machine. A folder that is not a run folder raises FileNotFoundError.
    """
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {run_dir} is not an scseg run folder")
    cfg = OmegaConf.load(config_path)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = ckpt.load_checkpoint(path)
    dm = build_datamodule(cfg)
    dm.set_canvas((state.get("extra") or {}).get("canvas"))  # the canvas the network was trained on
    model = build_model(cfg, dm.num_classes, dm.in_channels)
    ckpt.load_model_weights(model, state, str(cfg.model.arch), dm.num_classes)
    # prediction runs in the layout training ran in (the convolutions follow the weights' layout)
    return cfg, dm, model.to(memory_format=memory_format_of(cfg)), state


def eval_resample_of(cfg: DictConfig) -> str:
    """The run's ``trainer.eval_resample``; a run folder from before the key existed restored labels by nearest
    neighbour, so re-evaluating or predicting with it gives the numbers it was trained and selected with."""
    return str(cfg.trainer.get("eval_resample", "nearest"))


__all__ = ["eval_resample_of", "load_run", "memory_format_of"]
