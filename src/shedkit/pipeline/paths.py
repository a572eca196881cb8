"""Where shared caches live."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$SHEDKIT_CACHE``, else ``$XDG_CACHE_HOME/shedkit``, else ``~/.cache/shedkit``."""
    if os.environ.get("SHEDKIT_CACHE"):
        return Path(os.environ["SHEDKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shedkit"
