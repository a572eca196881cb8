"""Small builders shared by test modules (a plain module: ``from helpers import rec``; importing
from ``conftest`` breaks when another directory's conftest was imported first)."""

from shedkit.data.records import Turn, make_record


def rec(i, *turns):
    """A record from (role, content) pairs."""
    return make_record(i, [Turn(r, c) for r, c in turns], {"i": i})
