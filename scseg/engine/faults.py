"""Test-only fault injection: a training process kills itself at a named point, so crash recovery is testable.

A real crash (SIGKILL, power loss, a preempted job) can hit anywhere; tests need it at an exact, repeatable
point. ``SCSEG_FAULT=<point>:<n>``, read once when this module is imported, makes the process SIGKILL itself
when :func:`maybe_fail` is reached with that point and counter:

* ``after_step:<n>``: right after optimizer step ``n`` (global count), once the checkpoint due at it (if any)
  is written;
* ``checkpoint_write:<n>``: while writing the ``n``-th checkpoint file of this process (``last.pt`` and
  ``best.pt`` writes both count, from 1): the temporary file is left half written, the rename is never done.

Never set it outside tests. Unset, :func:`maybe_fail` is one comparison with ``None``.
"""

from __future__ import annotations

import os
import signal
from typing import IO

ENV = "SCSEG_FAULT"
POINTS = ("after_step", "checkpoint_write")
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


__all__ = ["ENV", "POINTS", "InjectedFault", "inject", "maybe_fail", "parse"]
