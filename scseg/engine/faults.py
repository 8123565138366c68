"""Test-only fault injection: a training process kills itself at a named point, so crash recovery is testable.

A real crash (SIGKILL, power loss, a preempted job) can hit anywhere; tests need it at an exact, repeatable
point. ``SCSEG_FAULT=<point>:<n>``, read once when this module is imported, makes the process SIGKILL itself
when :func:`maybe_fail` is reached with that point and counter:

* ``after_step:<n>``: right after optimizer step ``n`` (global count), once the checkpoint due at it (if any)
  is written;
* ``checkpoint_write:<n>``: while writing the ``n``-th checkpoint file of this process (``last.pt`` and
  ``best.pt`` writes both count, from 1): the temporary file is left half written, the rename is never done;
* ``loader_worker:<n>``: a training DataLoader worker (``data.loader.num_workers`` > 0) SIGKILLs itself, as the
  out-of-memory killer would, when it is about to load its ``n``-th batch. Counted in each worker process, and
  workers start anew every epoch: with one worker that is the epoch's ``n``-th batch (of the part left after a
  mid-epoch resume); with W workers, worker w loads batches w + 1, w + 1 + W, ... The training process dies only
  by what it does about a lost worker (:func:`loader_worker_init` is the hook, wired in by the trainer).

Never set it outside tests. Unset, :func:`maybe_fail` is one comparison with ``None``.
"""

from __future__ import annotations

import os
import signal
from typing import IO

ENV = "SCSEG_FAULT"
POINTS = ("after_step", "checkpoint_write", "loader_worker")
ACTIONS = ("kill", "raise")


class InjectedFault(BaseException):
    """Raised instead of SIGKILL for in-process tests; a BaseException so that, like a kill, no handler eats it."""


def parse(spec: str | None) -> tuple[str, int] | None:
    """``"after_step:5"`` -> ``("after_step", 5)``; empty or None -> None; anything else is an error."""
    if not spec:
        return None
    point, _, number = spec.partition(":")
    if point not in POINTS or not number.isdigit() or int(number) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<n> with point in {', '.join(POINTS)} and n >= 1")
    return point, int(number)


_fault: tuple[str, int] | None = parse(os.environ.get(ENV))
_action = "kill"


def inject(spec: str | None, action: str = "kill") -> None:
    """Set (or clear, with None) this process's fault, as ``SCSEG_FAULT`` would; ``action="raise"`` raises
    :class:`InjectedFault` instead of killing, for in-process tests."""
    global _fault, _action
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    _fault, _action = parse(spec), action


def maybe_fail(point: str, counter: int, partial: IO[bytes] | None = None) -> None:
    """Fail here if the injected fault is ``point:counter``. ``partial``: a file being written, cut to half its
    length first, so the crash leaves a partly written file behind."""
    if _fault is None or _fault != (point, counter):
        return
    if partial is not None:
        partial.flush()
        partial.truncate(partial.tell() // 2)
        partial.flush()
        os.fsync(partial.fileno())
    if _action == "raise":
        raise InjectedFault(f"injected fault {point}:{counter}")
    os.kill(os.getpid(), signal.SIGKILL)


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: arms ``loader_worker:<n>`` inside the worker process.

    The worker's copy of the dataset gets an instance ``__getitems__`` (which PyTorch's fetcher prefers to item
    by item loading) that counts batches and SIGKILLs the worker at the ``n``-th; always a kill (``action`` does
    not apply: an exception in a worker would only be passed on to the training process as a normal error).
    Unarmed it does nothing."""
    if _fault is None or _fault[0] != "loader_worker":
        return
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is None:  # called outside a worker
        return
    dataset, target, loaded = info.dataset, _fault[1], [0]

    def getitems(indices: list) -> list:
        loaded[0] += 1
        if loaded[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return [dataset[i] for i in indices]

    dataset.__getitems__ = getitems


__all__ = ["ENV", "POINTS", "InjectedFault", "inject", "loader_worker_init", "maybe_fail", "parse"]
