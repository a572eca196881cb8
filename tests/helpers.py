"""Small builders shared by test modules (a plain module: ``from helpers import rec``; importing
from ``conftest`` breaks when another directory's conftest was imported first)."""

from shedkit.data.records import Turn, make_record


def rec(i, *turns):
    """A record from (role, content) pairs."""
    return make_record(i, [Turn(r, c) for r, c in turns], {"i": i})


def mode_of(path):
    """A file's permission bits (``0o644``)."""
    import os
    import stat

    return stat.S_IMODE(os.lstat(path).st_mode)


def umask_setter():
    """A generator for a fixture: yields ``set(mask)``, which sets the process umask (and the
    cached copy shedkit's atomic writes read); the original umask is restored afterwards."""
    import os

    from shedkit.util.atomic import current_umask

    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask):
        os.umask(mask)
        assert current_umask(refresh=True) == mask

    try:
        yield set_umask
    finally:
        os.umask(old)
        current_umask(refresh=True)
