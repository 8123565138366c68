"""The SLURM launcher presets make the sbatch scripts they should, without a cluster.

hydra-submitit-launcher turns ``hydra.launcher`` into submitit's SLURM parameters; submitit writes the sbatch script.
Here the same translation runs on the composed presets (submitit only needs an ``srun`` on PATH to accept the
SLURM executor), so a wrong key or value fails here rather than at ``sbatch`` on the cluster. The submission
path itself (pickled jobs, failure report, resume) is tested with submitit's local executor in
tests/test_sweep_faults.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import submitit
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from scseg.config import compose_train_config
from scseg.engine.run import run_folder


def _sbatch_script(overrides: list[str], tmp_path: Path) -> str:
    """The sbatch script hydra-submitit-launcher would submit for ``overrides`` (its parameter mapping)."""
    cfg = compose_train_config(overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith(".SlurmLauncher")
    folder = params.pop("submitit_folder")
    init = {"slurm_max_num_timeout": params.pop("max_num_timeout")}
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **init)
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_gpu_preset_asks_for_one_gpu_per_run(tmp_path, fake_srun, monkeypatch):
    monkeypatch.setenv("SCSEG_SLURM_PARTITION", "gpu")
    monkeypatch.delenv("SCSEG_SLURM_ACCOUNT", raising=False)
    runs = tmp_path / "runs"
    script = _sbatch_script(["launcher=slurm", "experiment=paper_malc", f"paths.runs_dir={runs}"], tmp_path)
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=720"):
        assert f"#SBATCH {line}\n" in script, line
    assert f"#SBATCH --output={runs}/paper_malc/.submitit/%j/%j_0_log.out" in script
    assert "#SBATCH --job-name=scseg-paper_malc\n" in script
    assert "--account" not in script


def test_cpu_preset_asks_for_two_cores_and_no_gpu(tmp_path, fake_srun, monkeypatch):
    monkeypatch.delenv("SCSEG_SLURM_PARTITION", raising=False)
    monkeypatch.setenv("SCSEG_SLURM_ACCOUNT", "lab")
    overrides = ["launcher=slurm_cpu", "experiment=paper_malc_cpu", f"paths.runs_dir={tmp_path}"]
    script = _sbatch_script(overrides, tmp_path)
    assert "#SBATCH --cpus-per-task=2\n" in script and "#SBATCH --account=lab\n" in script
    assert "gpus" not in script and "--partition" not in script  # the cluster's default partition
    cfg = compose_train_config(overrides)
    # the CPU preset stays what it was calibrated as: same run folders as launcher=joblib
    assert (cfg.trainer.device, cfg.trainer.amp, cfg.trainer.num_threads) == ("cpu", False, 2)
    assert run_folder(cfg) == run_folder(
        compose_train_config(["launcher=joblib", "experiment=paper_malc_cpu", f"paths.runs_dir={tmp_path}"])
    )
