"""``python -m scseg.train``: kept so that the documented command (and ``torchrun ... -m scseg.train``) still
works; the command itself is :mod:`scseg.cli.train` (``scseg-train``). Nothing but this forwarding lives here."""

from __future__ import annotations

from scseg.cli.train import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
