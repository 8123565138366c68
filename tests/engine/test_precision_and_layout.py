"""Mixed precision (CUDA only), channels-last and torch.compile options of the trainer."""

from __future__ import annotations

import pytest
import torch

from scseg.engine.run import run_training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="automatic mixed precision runs on CUDA only")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_on_cuda(tiny_config, dtype):
    cfg = tiny_config("unet", "trainer.device=cuda", "trainer.amp=true", f"trainer.amp_dtype={dtype}")
    result = run_training(cfg)
    assert result.state == "done" and result.summary["fg_mean"] is not None


def test_bf16_on_the_cpu_trains_and_is_recorded(tiny_config, capsys):
    """Forced bf16 autocast on the CPU (emulated where there is no AMX, as on the development machine): the run
    learns like fp32 and says what ran; loss and metrics stay fp32."""
    from scseg.engine.precision import cpu_has_amx

    result = run_training(tiny_config("unet", "trainer.amp=true"))
    assert result.state == "done" and result.summary["precision"] == "bf16"
    fp32 = run_training(tiny_config("unet", "trainer.amp=false"))
    assert fp32.summary["precision"] == "fp32" and fp32.run_dir != result.run_dir  # precision is in the hash
    assert result.summary["fg_mean"] > fp32.summary["fg_mean"] - 0.15  # bf16 rounding, not a broken run
    if not cpu_has_amx():
        assert "without AMX runs on its vector units" in capsys.readouterr().err


def test_auto_precision_follows_the_hardware(monkeypatch):
    from scseg.config.compose import compose_train_config
    from scseg.engine import precision
    from scseg.engine.run import identity

    for amx in (False, True):
        monkeypatch.setattr(precision, "cpu_has_amx", lambda amx=amx: amx)
        assert precision.resolve_amp("auto", "cpu") is amx
        assert precision.resolve_amp("auto", "cuda") is True
        assert precision.resolve_amp(False, "cuda") is False
        # the hash holds the precision that runs: auto equals the explicit value it resolves to on this machine
        auto = identity(compose_train_config(["trainer.amp=auto"]))
        assert auto == identity(compose_train_config([f"trainer.amp={str(amx).lower()}"]))
    with pytest.raises(ValueError, match="trainer.amp"):
        precision.resolve_amp("yes", "cpu")


def test_cpuinfo_flags_are_read(tmp_path):
    from scseg.engine.precision import cpu_has_amx

    with_amx = tmp_path / "amx"
    with_amx.write_text("processor: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    without = tmp_path / "none"
    without.write_text("processor: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_amx(str(with_amx)) and not cpu_has_amx(str(without)) and not cpu_has_amx(str(tmp_path / "x"))


def test_channels_last(tiny_config):
    assert run_training(tiny_config("sdnet", "trainer.channels_last=true")).state == "done"


@pytest.mark.slow
def test_torch_compile(tiny_config):
    """Budget: about 2 minutes on 2 CPU cores (inductor compiles forward and backward once)."""
    assert run_training(tiny_config("unet", "trainer.compile=true", "trainer.max_epochs=1")).state == "done"


def test_memory_format_of_reads_the_run_config_and_old_run_folders_default_to_nchw():
    from omegaconf import open_dict

    from scseg.config.compose import compose_train_config
    from scseg.engine.spec import RunSpec

    def memory_format_of(cfg):
        return RunSpec.from_config(cfg).memory_format

    assert memory_format_of(compose_train_config(["trainer.channels_last=true"])) == torch.channels_last
    assert memory_format_of(compose_train_config(["trainer.channels_last=false"])) == torch.contiguous_format
    old = compose_train_config([])
    with open_dict(old):
        del old.trainer["channels_last"]  # a run folder from before the key existed
    assert memory_format_of(old) == torch.contiguous_format


def test_loaded_run_predicts_in_the_layout_it_trained_in(tiny_config, tmp_path):
    from scseg.engine.loading import load_run

    result = run_training(tiny_config("unet", "trainer.channels_last=true"))
    _, _, model, _ = load_run(result.run_dir)
    # only a weight with several input channels and a k x k kernel tells the two layouts apart
    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not any(p.is_contiguous() for p in kernels)
