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


def test_amp_is_ignored_on_cpu_with_a_message(tiny_config, capsys):
    result = run_training(tiny_config("unet", "trainer.amp=true"))
    assert result.state == "done"
    assert "trainer.amp is ignored on CPU" in capsys.readouterr().err


def test_channels_last(tiny_config):
    assert run_training(tiny_config("sdnet", "trainer.channels_last=true")).state == "done"


@pytest.mark.slow
def test_torch_compile(tiny_config):
    """Budget: about 2 minutes on 2 CPU cores (inductor compiles forward and backward once)."""
    assert run_training(tiny_config("unet", "trainer.compile=true", "trainer.max_epochs=1")).state == "done"
