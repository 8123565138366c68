"""``python -m scseg.data inspect ...``: kept so that the documented command still works; the command itself is
:mod:`scseg.cli.inspect`. Nothing but this forwarding lives here (the one import from the data package up to the
command-line faces, declared in pyproject.toml's import contracts)."""

from __future__ import annotations

import sys

from scseg.cli.inspect import main

if __name__ == "__main__":
    sys.exit(main())
