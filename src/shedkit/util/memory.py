"""Peak resident memory of this process, for the benchmarks' memory columns."""

from __future__ import annotations

import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM on Linux (reset by exec), else ru_maxrss.

    ru_maxrss survives fork + exec on Linux, so a child would report its parent's peak (e.g. the
    parent that loaded an embedding model); VmHWM belongs to the process's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
