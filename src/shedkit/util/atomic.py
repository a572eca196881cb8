"""Atomic writes: write a temp file next to the target, then ``os.replace`` it into place.

A reader never sees a half-written file, and a crash leaves at most a hidden ``.NAME.*.tmp``
that nothing reads. Every module writes through these (``shedkit.data.containers`` re-exports
them for older imports).

Modes: ``mkstemp``/``mkdtemp`` (and some writers, e.g. safetensors) create their files private
(0600/0700), which a rename would carry over to the published output. Before the rename,
:func:`publish_mode` gives the result the mode a plain ``open()``/``mkdir()`` would have given
(``0o666 & ~umask`` for files, ``0o777 & ~umask`` for directories), so outputs and caches on a
shared machine follow the user's umask. Writers that build a directory themselves (model saves,
checkpoints, caches) call ``publish_mode(tmp, tree=True)`` before renaming it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _read_umask() -> int:
    try:  # Linux >= 4.7: read without touching the process-wide setting
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    # os.umask can only be read by setting it: set a strict mask for the instant it takes, so a
    # file another thread creates meanwhile comes out private rather than world-writable
    old = os.umask(0o077)
    os.umask(old)
    return old & 0o777


def current_umask(refresh: bool = False) -> int:
    """The process umask, read once (thread-safely) and cached; ``refresh`` reads it again
    (after the program changes its umask with ``os.umask``)."""
    global _UMASK
    if _UMASK is None or refresh:
        with _UMASK_LOCK:
            if _UMASK is None or refresh:
                _UMASK = _read_umask()
    return _UMASK


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open(..., "w")`` (``0o666 & ~umask``) or ``mkdir`` (``0o777 & ~umask``)
    gives a new file or directory."""
    return (0o777 if directory else 0o666) & ~current_umask()


def _chmod(path: str | os.PathLike, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except (NotImplementedError, OSError):
        pass  # a file system without modes (some FUSE/SMB/FAT mounts): the write itself stands


def publish_mode(path: str | os.PathLike, *, tree: bool = False) -> Path:
    """Give ``path`` the mode a plain ``open()``/``mkdir()`` would have given it (see
    :func:`default_mode`), undoing the private mode of ``mkstemp``/``mkdtemp`` or a writer's own
    temp file; with ``tree``, also every directory and file under a directory ``path``.
    Symbolic links are left alone. Call it on the temp path just before renaming it into place."""
    path = Path(path)
    file_mode, dir_mode = default_mode(False), default_mode(True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISDIR(st.st_mode):
        _chmod(path, dir_mode)
        if tree:
            for root, dirs, files in os.walk(path):
                for name in dirs:
                    p = os.path.join(root, name)
                    if not os.path.islink(p):
                        _chmod(p, dir_mode)
                for name in files:
                    p = os.path.join(root, name)
                    if not os.path.islink(p):
                        _chmod(p, file_mode)
    elif stat.S_ISREG(st.st_mode):
        _chmod(path, file_mode)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path next to ``path`` (parents created); renamed over ``path`` on
    success (with the mode a plain ``open()`` would give, see :func:`publish_mode`), removed on
    any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp directory next to ``path``; renamed to ``path`` on success (which must
    not exist then; the directory and everything in it get plain ``mkdir``/``open`` modes, see
    :func:`publish_mode`), removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_mode(tmp, tree=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Strict JSON (NaN and infinities become null; numpy scalars become numbers), atomically."""
    text = json.dumps(strict_json(obj), indent=indent, ensure_ascii=False, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` (no pickle) atomically."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return Path(path)


def strict_json(obj: Any) -> Any:
    """``obj`` with non-finite floats as None and numpy scalars as Python numbers."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return strict_json(obj.item())  # numpy scalars
    return obj
