"""Fused CPU kernels for cSE, sSE and scSE (``add``): each block in two passes over ``x`` forward and two backward.

Why: the gates' arithmetic is tiny, so on a CPU an SE block costs its passes over the full-size feature map. Built
from ATen operations (scseg.models.se), scSE ``add`` makes about a dozen of them (the two squeezes, ``x*c + x*s``,
``grad * x``, both backward sums, three input-gradient terms and autograd's sums of them); here the squeezes are one
pass, the recombination one, the backward sums one and the input gradient one, with nothing full-size kept for
backward but ``x`` (``scripts/benchmark.py`` measures both paths).

The kernels (``se_kernels.cpp``) are compiled on first use with torch's extension loader (a C++ compiler and
``ninja``; ~40 s once, then cached under ``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``) in a child
process with a deadline (``trainer.se_kernels_build_timeout_s``), so a stale build lock or a stuck compiler can never
hang a run; ``make install`` builds them once. They are opt-in (``trainer.se_kernels``, default eager). They handle
float32/float64 CPU tensors in NCHW or channels-last memory, 2D and 3D; anything else (CUDA, half precision,
``torch.compile`` tracing, the ``max``/``mul``/``concat`` aggregations) takes the ATen path, which computes the same
function. Results equal the ATen path up to float rounding (``tests/models/test_se_fused.py``), so the setting
(``trainer.se_kernels``: auto | fused | eager) is left out of the run's config hash.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from scseg.se_options import SE_KERNEL_MODES

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("se_kernels.cpp")
_lock = threading.Lock()
_build: dict[str, object] = {}  # "ok": bool and "why": str once a build was attempted
# How long one build may take (a cold build is ~40 s on 2 cores); past it the build is killed and the ATen path runs.
# A ``lock`` older than this in the build folder was left by a build killed at the wrong moment and is removed.
DEFAULT_BUILD_TIMEOUT_S = 300.0
_CHILD = "scseg.models.se_fused"


def library_name() -> str:
    """The library's name: it changes with the C++ source and the torch version, so a stale binary is never loaded."""
    digest = hashlib.sha1(_SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    return f"scseg_se_kernels_{digest}"


def build_directory() -> Path:
    """Where the kernels are built: ``<torch's extension root>/<library name>``, i.e. ``$TORCH_EXTENSIONS_DIR`` or
    ``~/.cache/torch_extensions`` (one build serves every run folder, data cache and test session)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / library_name()


def clear_stale_lock(folder: Path, stale_after_s: float) -> bool:
    """Remove ``folder/lock`` when it is older than ``stale_after_s``; True if one was removed.

    Why: torch's extension loader waits, with no time limit, for a ``lock`` file to disappear. A build killed by
    SIGKILL, the OOM killer or a cluster's preemption leaves it behind, and every later build would wait for ever.
    """
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < stale_after_s:
        return False
    log.warning("removing a stale build lock of the fused SE kernels (%s, %.0f s old)", lock, age)
    lock.unlink(missing_ok=True)
    return True


def _compile_here(folder: Path) -> Path:
    """Compile the library into ``folder`` in this process (what the build child runs); returns the library path."""
    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=library_name(),
        sources=[str(_SOURCE)],
        # OpenMP: at::parallel_for runs on torch's own OpenMP runtime (libgomp.so.1, already loaded)
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )
    return folder / f"{library_name()}.so"


def _build_in_child(folder: Path, timeout_s: float) -> Path:
    """Compile in a child process (its own process group) and kill the whole group after ``timeout_s``.

    A build can hang (a lock held by a live but stuck build, a compiler waiting on a full disk); a child with a
    deadline keeps that out of the run, which then takes the ATen path. Raises ``RuntimeError`` naming the cause.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", _CHILD, "--build-only", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        # The lock may be the killed build's own, or one it waited on for the whole deadline: either way stale now.
        (folder / "lock").unlink(missing_ok=True)
        raise RuntimeError(f"building the fused SE kernels in {folder} took longer than {timeout_s:.0f} s") from None
    lines = output.strip().splitlines() or [""]
    if child.returncode != 0:
        first_error = next((line for line in lines if "error" in line.lower()), lines[-1])
        raise RuntimeError(first_error.strip())
    return Path(lines[-1].strip())


def kernels_available(timeout_s: float = DEFAULT_BUILD_TIMEOUT_S) -> tuple[bool, str]:
    """Build (once per process) and load the fused kernels; ``(True, how)`` or ``(False, why not)``. Never raises
    and never waits longer than ``timeout_s`` for a build: a stale lock is removed, a slow build is killed."""
    with _lock:
        if "ok" not in _build:
            start = time.perf_counter()
            folder = build_directory()
            library = folder / f"{library_name()}.so"
            try:
                clear_stale_lock(folder, stale_after_s=timeout_s)
                how = "loaded"
                if not library.exists() or (folder / "lock").exists():
                    library, how = _build_in_child(folder, timeout_s), "compiled"
                torch.ops.load_library(str(library))
                torch.ops.scseg_se.squeeze  # noqa: B018 - raises if the library did not register its operators
                _build.update(ok=True, why=f"{how} in {time.perf_counter() - start:.1f} s", library=str(library))
            except Exception as exc:  # no compiler, no ninja, a read-only cache, a timeout: the ATen path still works
                lines = str(exc).strip().splitlines() or [""]
                first_error = next((line for line in lines if "error" in line.lower()), lines[-1])
                _build.update(ok=False, why=f"{type(exc).__name__}: {first_error.strip()}")
        return bool(_build["ok"]), str(_build["why"])


def resolve_mode(mode: str) -> str:
    """``fused`` or ``eager`` for a configured ``trainer.se_kernels`` value; ``auto`` falls back to eager (logged)
    when the kernels cannot be built, ``fused`` raises instead."""
    if mode not in SE_KERNEL_MODES:
        raise ValueError(f"trainer.se_kernels: unknown value {mode!r}; valid choices: {', '.join(SE_KERNEL_MODES)}")
    if mode == "eager":
        return "eager"
    ok, why = kernels_available()
    if ok:
        return "fused"
    if mode == "fused":
        raise RuntimeError(f"trainer.se_kernels=fused: the fused SE kernels could not be built ({why})")
    if not _build.get("warned"):
        _build["warned"] = True
        log.warning("fused SE kernels unavailable (%s); the SE blocks use ATen operations (same results, slower)", why)
    return "eager"


def channels_last_rows(t: torch.Tensor) -> torch.Tensor | None:
    """``(N, P, C)`` view of a channels-last tensor (each pixel's channels one contiguous row), else ``None``.

    Why: reductions over space or channels written on ``(N, C, *spatial)`` run ATen's strided paths on
    channels-last memory (several times slower there); on this view the same sums are contiguous, and it is the
    ``rows`` layout the fused kernels read. Tensors that are also NCHW-contiguous (one channel, or one pixel) are
    left to the NCHW path.
    """
    if t.ndim < 3 or t.is_contiguous():
        return None
    rows = t.permute(0, *range(2, t.ndim), 1)
    if not rows.is_contiguous():
        return None
    return rows.reshape(t.shape[0], -1, t.shape[1])


def layout_of(x: torch.Tensor) -> tuple[torch.Tensor, bool] | None:
    """``(3D view, channels_last)`` the kernels can take ``x`` as, or None when they cannot (then: ATen path)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.ndim not in (4, 5):
        return None
    if torch.compiler.is_compiling():
        return None
    if x.is_contiguous():
        return x.view(*x.shape[:2], -1), False
    rows = channels_last_rows(x)
    return (rows, True) if rows is not None else None


def _like(flat: torch.Tensor, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A kernel's 3D output as a tensor of ``x``'s shape and memory layout (a view, no copy)."""
    if not channels_last:
        return flat.view(x.shape)
    return flat.view(x.shape[0], *x.shape[2:], x.shape[1]).permute(0, x.ndim - 1, *range(1, x.ndim - 1))


def _flat_like(t: torch.Tensor, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` (``x``'s shape, any layout) as the 3D view the kernels read; copies only if its layout differs."""
    n, c = x.shape[:2]
    if not channels_last:
        return t.contiguous().view(n, c, -1)
    return t.permute(0, *range(2, t.ndim), 1).contiguous().view(n, -1, c)


def _excite(mean: torch.Tensor, fc1_w, fc1_b, fc2_w, fc2_b) -> torch.Tensor:
    """cSE's excitation, the same layers as ``ChannelSE`` (two linear layers, ReLU, sigmoid)."""
    return torch.sigmoid(F.linear(torch.relu(F.linear(mean, fc1_w, fc1_b)), fc2_w, fc2_b))


def _excite_backward(grad_gate, mean, gate, fc1_w, fc1_b, fc2_w, fc2_b):
    """Gradients of ``_excite`` by hand: the mean's and (fc1_w, fc1_b, fc2_w, fc2_b)'s (a bias's is None when the
    layer has none). Written out because ``torch.autograd.grad`` on the recomputed graph cost ~0.3 ms of fixed
    overhead per block and step, longer than the arithmetic (tensors of N x C)."""
    hidden_in = F.linear(mean, fc1_w, fc1_b)
    hidden = torch.relu(hidden_in)
    grad_out = grad_gate * gate * (1 - gate)  # through the sigmoid, as autograd's sigmoid backward computes it
    grad_hidden = (grad_out @ fc2_w) * (hidden_in > 0)
    grads = (
        grad_hidden.t() @ mean,
        grad_hidden.sum(0) if fc1_b is not None else None,
        grad_out.t() @ hidden,
        grad_out.sum(0) if fc2_b is not None else None,
    )
    return grad_hidden @ fc1_w, grads


class FusedRecalibration(torch.autograd.Function):
    """``x * (c + s)`` with ``c = sigmoid(fc2(relu(fc1(mean_space x))))`` (when ``fc1_w`` is given) and
    ``s = sigmoid(w . x + b)`` (when ``proj_w`` is given): cSE, sSE or scSE ``add`` as one autograd node.

    Saves ``x`` and the small gates; backward recomputes the excitation's tiny graph to differentiate it.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x, fc1_w, fc1_b, fc2_w, fc2_b, proj_w, proj_b):  # noqa: D102
        flat, channels_last = layout_of(x)
        has_c, has_s = fc1_w is not None, proj_w is not None
        weight = proj_w.reshape(-1).to(x.dtype) if has_s else flat.new_empty(0)
        bias = float(proj_b) if has_s and proj_b is not None else 0.0
        sums, logits = torch.ops.scseg_se.squeeze(flat, weight, bias, channels_last, has_c, has_s)
        pixels = flat.shape[1] if channels_last else flat.shape[2]
        mean = sums / pixels if has_c else None
        c_gate = _excite(mean, fc1_w, fc1_b, fc2_w, fc2_b).contiguous() if has_c else flat.new_empty(0)
        s_gate = torch.sigmoid(logits) if has_s else flat.new_empty(0)
        out = torch.ops.scseg_se.recalibrate(flat, c_gate, s_gate, channels_last)
        ctx.save_for_backward(x, mean if has_c else None, c_gate, s_gate, weight, fc1_w, fc1_b, fc2_w, fc2_b)
        ctx.flags = (channels_last, has_c, has_s, proj_b is not None, pixels)
        ctx.proj_shape = proj_w.shape if has_s else None
        return _like(out, x, channels_last)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):  # noqa: D102
        x, mean, c_gate, s_gate, weight, fc1_w, fc1_b, fc2_w, fc2_b = ctx.saved_tensors
        channels_last, has_c, has_s, has_bias, pixels = ctx.flags
        flat = layout_of(x)[0]
        g = _flat_like(grad.to(x.dtype), x, channels_last)
        grad_c, grad_q, grad_w = torch.ops.scseg_se.reduce_grads(g, flat, s_gate, channels_last, has_c)
        fc_grads = [None] * 4
        mean_share = flat.new_empty(0)
        if has_c:
            grad_mean, grads = _excite_backward(grad_c.to(mean.dtype), mean, c_gate, fc1_w, fc1_b, fc2_w, fc2_b)
            mean_share = (grad_mean / pixels).contiguous()
            fc_grads = [g if needed else None for g, needed in zip(grads, ctx.needs_input_grad[1:5])]
        grad_x = None
        if ctx.needs_input_grad[0]:
            flat_grad = torch.ops.scseg_se.input_grad(g, c_gate, s_gate, mean_share, weight, grad_q, channels_last)
            grad_x = _like(flat_grad, x, channels_last)
        grad_proj_w = grad_proj_b = None
        if has_s:
            grad_proj_w = grad_w.reshape(ctx.proj_shape)
            grad_proj_b = grad_q.sum().reshape(1) if has_bias else None
        return grad_x, *fc_grads, grad_proj_w, grad_proj_b


def main(argv: list[str] | None = None) -> int:
    """``python -m scseg.models.se_fused``: build the kernels now (``make install``); ``--build-only DIR`` is the
    build child's entry (compile into DIR, print the library's path)."""
    parser = argparse.ArgumentParser(prog="python -m scseg.models.se_fused", description=main.__doc__)
    parser.add_argument("--build-only", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_BUILD_TIMEOUT_S, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.build_only:
        print(_compile_here(Path(args.build_only)), flush=True)
        return 0
    ok, why = kernels_available(args.timeout)
    print(f"fused SE kernels: {'available' if ok else 'unavailable'} ({why})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
