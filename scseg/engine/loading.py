"""A finished run folder back in memory: its resolved config, data module, model and checkpoint.

``scseg-evaluate``, ``scseg-predict`` and ``scseg-gates`` all start from a run folder; this is the one way they
rebuild it, so each sees the same network on the same canvas as training did.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from scseg.data.datamodule import DataModule
from scseg.engine import checkpoint as ckpt
from scseg.engine.run import build_datamodule, build_model
from scseg.engine.spec import RunSpec


def load_run(run_dir: Path, checkpoint: str = "best") -> tuple[RunSpec, DataModule, torch.nn.Module, dict]:
    """(run spec, data module, model with the checkpoint's weights, checkpoint state) of a run folder.

    Reads ``.hydra/config.yaml`` and ``checkpoints/<checkpoint>.pt`` (``weights_only``, never executing code) and
    restores the slice canvas the network was trained on from the checkpoint, so prediction pads like training
    did whatever data is present on this machine. A folder that is not a run folder raises FileNotFoundError.
    Keys the run's config predates take the values that run ran with (:class:`scseg.engine.spec.RunSpec`).
    """
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {run_dir} is not an scseg run folder")
    spec = RunSpec.from_config(OmegaConf.load(config_path))
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = ckpt.load_checkpoint(path)
    dm = build_datamodule(spec)
    dm.set_canvas((state.get("extra") or {}).get("canvas"))  # the canvas the network was trained on
    model = build_model(spec, dm.num_classes, dm.in_channels)
    ckpt.load_model_weights(model, state, spec.model.arch, dm.num_classes)
    # prediction runs in the layout training ran in (the convolutions follow the weights' layout)
    return spec, dm, model.to(memory_format=spec.memory_format), state


__all__ = ["load_run"]
