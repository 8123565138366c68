"""The glibc tuning of scseg.engine.allocator: active in every scseg process, off on request, harmless elsewhere.

glibc has no getter for its thresholds, so "tuned" is observed: a 64 MiB malloc shows up in
``mallinfo2().hblks`` (blocks served by mmap) when untuned and not when tuned. Real mallopt calls only happen in
child processes, so this pytest process keeps glibc's defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scseg.engine import allocator
from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER

REPO_ROOT = Path(__file__).resolve().parents[2]
_MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES", "LD_PRELOAD")

# Allocate 64 MiB, read mallinfo2 while it is held, free: prints how many more blocks are mmapped (0 or 1).
_PROBE = """
import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mmapped_during_64mib_malloc():
    before = libc.mallinfo2().hblks
    block = libc.malloc(64 << 20)
    during = libc.mallinfo2().hblks
    libc.free(block)
    return during - before
"""


def _real_glibc() -> bool:
    libc, _ = allocator.glibc()
    return libc is not None and hasattr(libc, "mallinfo2")


needs_glibc = pytest.mark.skipif(not _real_glibc(), reason="needs glibc with mallinfo2 (2.33+)")


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _MALLOC_VARS and k != allocator.ENV_SWITCH}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _run_python(code: str, env: dict[str, str], cwd: Path | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_glibc
@pytest.mark.parametrize(("switch", "mode", "mmapped"), [(None, "glibc-tuned", 0), ("0", "disabled", 1)])
def test_tuning_keeps_a_64mib_block_off_mmap(switch: str | None, mode: str, mmapped: int) -> None:
    env = _child_env(**({allocator.ENV_SWITCH: switch} if switch else {}))
    code = _PROBE + (
        "from scseg.engine.allocator import tune_allocator\n"
        "print('untuned', mmapped_during_64mib_malloc())\n"
        "print('mode', tune_allocator())\n"
        "print('after', mmapped_during_64mib_malloc())\n"
    )
    out = _run_python(code, env).splitlines()
    assert out == ["untuned 1", f"mode {mode}", f"after {mmapped}"]


@needs_glibc
@pytest.mark.parametrize(("override", "mode", "mmapped"), [("", "glibc-tuned", 0), ("false", "disabled", 1)])
def test_a_training_process_is_tuned(tmp_path: Path, override: str, mode: str, mmapped: int) -> None:
    """A whole tiny scseg-train run in a fresh process, probed from inside that process once it has trained."""
    args = [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        "trainer.max_epochs=1",
        "logger.enabled=false",
        f"paths.runs_dir={tmp_path / 'runs'}",
        *([f"trainer.tune_malloc={override}"] if override else []),
    ]
    code = _PROBE + (
        "import os, sys\n"
        "from scseg.train import main\n"
        f"sys.argv = ['scseg-train', *{args!r}]\n"
        "main()\n"
        "print('probe', mmapped_during_64mib_malloc())\n"
        "print('env', os.environ.get('MALLOC_MMAP_THRESHOLD_'))\n"
    )
    out = _run_python(code, _child_env(SCSEG_CACHE=str(tmp_path / "cache")), cwd=tmp_path)
    assert f"allocator: {mode}\n" in out
    assert f"probe {mmapped}\n" in out
    expected_env = str(allocator.MMAP_THRESHOLD) if mode == "glibc-tuned" else "None"
    assert f"env {expected_env}\n" in out


class ProbeDataset(torch.utils.data.Dataset):
    """One item: whether a 64 MiB malloc is mmapped in the DataLoader worker that loads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return int(bool(allocator.large_blocks_mmapped()))


@needs_glibc
@pytest.mark.parametrize(("context", "switch", "mmapped"), [("spawn", None, 0), ("fork", None, 0), ("spawn", "0", 1)])
def test_dataloader_workers_inherit_the_tuning(context: str, switch: str | None, mmapped: int) -> None:
    """Spawned workers get it from the MALLOC_* variables, forked ones from the parent's mallopt state."""
    env = _child_env(**({allocator.ENV_SWITCH: switch} if switch else {}))
    code = (
        "import torch\n"
        "from scseg.engine.allocator import tune_allocator\n"
        "from tests.engine.test_allocator import ProbeDataset\n"
        "tune_allocator()\n"
        f"loader = torch.utils.data.DataLoader(ProbeDataset(), batch_size=None, num_workers=1, "
        f"multiprocessing_context={context!r})\n"
        "print('worker', int(next(iter(loader))))\n"
    )
    assert _run_python(code, env).splitlines()[-1] == f"worker {mmapped}"


@pytest.fixture
def clean_state(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's allocator bookkeeping and MALLOC_* variables, restored after the test."""
    for name in (*_MALLOC_VARS, allocator.ENV_SWITCH):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator, "_tuned", False)
    monkeypatch.setattr(allocator, "_env_set", [])
    return monkeypatch


class FakeGlibc:
    """Records mallopt calls instead of making them; ``cap`` mimics older glibc's 32 MiB mmap-threshold limit."""

    def __init__(self, cap: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.cap = cap

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param == -3 and self.cap is not None and value > self.cap else 1


def test_tune_sets_thresholds_and_child_variables_once(clean_state: pytest.MonkeyPatch) -> None:
    fake = FakeGlibc()
    clean_state.setattr(allocator, "glibc", lambda: (fake, ""))
    assert allocator.tune_allocator() == "glibc-tuned"
    assert fake.calls == [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD)]
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(allocator.MMAP_THRESHOLD)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(allocator.TRIM_THRESHOLD)
    assert allocator.tune_allocator() == "glibc-tuned"  # idempotent
    # Turned off later in the same process (a sequential multirun): children no longer inherit it.
    assert allocator.tune_allocator(False).startswith("disabled")
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ and "MALLOC_TRIM_THRESHOLD_" not in os.environ


def test_user_settings_are_kept(clean_state: pytest.MonkeyPatch) -> None:
    fake = FakeGlibc()
    clean_state.setattr(allocator, "glibc", lambda: (fake, ""))
    clean_state.setenv("MALLOC_TRIM_THRESHOLD_", "4096")
    clean_state.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    mode = allocator.tune_allocator()
    assert mode.startswith("glibc-tuned (kept ") and "MALLOC_TRIM_THRESHOLD_=4096" in mode and "GLIBC_TUNABLES" in mode
    assert fake.calls == []
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "4096" and "MALLOC_MMAP_THRESHOLD_" not in os.environ


def test_older_glibc_turns_mmap_off_instead(clean_state: pytest.MonkeyPatch) -> None:
    fake = FakeGlibc(cap=32 << 20)
    clean_state.setattr(allocator, "glibc", lambda: (fake, ""))
    mode = allocator.tune_allocator()
    assert "mmap turned off" in mode
    assert (-4, 0) in fake.calls
    assert os.environ["MALLOC_MMAP_MAX_"] == "0" and "MALLOC_MMAP_THRESHOLD_" not in os.environ


@pytest.mark.parametrize(
    ("platform", "preload", "cdll_error", "reason"),
    [
        ("darwin", "", None, "not Linux"),
        ("win32", "", None, "not Linux"),
        ("linux", "/usr/lib/libtcmalloc_minimal.so.4", None, "tcmalloc preloaded"),
        ("linux", "", AttributeError, "not glibc"),  # musl: no gnu_get_libc_version
        ("linux", "", OSError, "not glibc"),
    ],
)
def test_non_glibc_is_a_silent_no_op(
    clean_state: pytest.MonkeyPatch, platform: str, preload: str, cdll_error: type | None, reason: str
) -> None:
    clean_state.setattr(allocator.sys, "platform", platform)
    if preload:
        clean_state.setenv("LD_PRELOAD", preload)
    if cdll_error is not None:

        def fake_cdll(name: object) -> object:
            if cdll_error is OSError:
                raise OSError("no C library")
            return type("Musl", (), {"mallopt": lambda *a: 1})()

        clean_state.setattr(allocator.ctypes, "CDLL", fake_cdll)
    mode = allocator.tune_allocator()
    assert mode.startswith("unsupported:") and reason in mode
    assert allocator.mmap_count() is None and allocator.large_blocks_mmapped() is None
    assert not any(name.startswith("MALLOC_") for name in os.environ)


def test_config_switch_is_valid_and_outside_the_hash(tiny_config) -> None:
    from scseg.config.check import validate_config
    from scseg.run_identity import config_hash

    on, off = tiny_config("unet"), tiny_config("unet", "trainer.tune_malloc=false")
    assert on.trainer.tune_malloc is True and off.trainer.tune_malloc is False
    validate_config(off)
    assert config_hash(on) == config_hash(off)
