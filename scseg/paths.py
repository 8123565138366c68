"""Where scseg's own files live: the repository root, paths relative to it, and the cache root.

One home for the three questions several layers ask (the configs folder, a dataset root or split file given
relative to the repository, where preprocessed subjects and generated phantoms are cached), so the answers
cannot drift apart. scseg runs from a clone with an editable install, so the repository root is the folder above
this package; ``configs/`` lives there.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Environment variable naming the cache folder (preprocessed subjects, generated phantom datasets).
CACHE_ENV = "SCSEG_CACHE"


def resolve_path(path: str | os.PathLike, base: Path | None = None) -> Path:
    """User-expanded path; relative ones are taken relative to ``base`` (default: the repository root)."""
    p = Path(str(path)).expanduser()
    if not p.is_absolute():
        p = (base if base is not None else REPO_ROOT) / p
    return p


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$SCSEG_CACHE``, else ``~/.cache/scseg`` (user-expanded, absolute)."""
    if cache_dir is None or str(cache_dir) == "":
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scseg"
    return Path(cache_dir).expanduser().resolve()


__all__ = ["CACHE_ENV", "REPO_ROOT", "cache_root", "resolve_path"]
