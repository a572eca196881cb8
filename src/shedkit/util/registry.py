"""Name lookup with "did you mean" on a typo: methods, backends, estimators, formats, options.

    >>> lookup({"random": 1, "dsir": 2}, "randon", "method")
    Traceback (most recent call last):
    shedkit.errors.ShedkitError: unknown method 'randon' (did you mean 'random'?); choose one of: random, dsir
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, TypeVar

from shedkit.errors import ShedkitError

V = TypeVar("V")


def close_match(name: Any, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``name`` (difflib ratio >= ``cutoff``), or None."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: Any, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = close_match(name, choices, cutoff)
    return f" (did you mean '{close}'?)" if close else ""


def unknown_name(kind: str, name: Any, choices: Iterable[str], cutoff: float = 0.6) -> ShedkitError:
    """The error for a name that is not one of ``choices`` (raise it)."""
    choices = list(choices)
    return ShedkitError(f"unknown {kind} '{name}'{did_you_mean(name, choices, cutoff)}; "
                        f"choose one of: {', '.join(map(str, choices))}")


def lookup(table: Mapping[str, V], name: Any, kind: str) -> V:
    """``table[name]``, or a :class:`ShedkitError` naming the closest key."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise unknown_name(kind, name, table) from None


def lazy_attributes(package: str, table: Mapping[str, str]):
    """A module ``__getattr__`` that imports ``package.<table[name]>`` on first use of ``name``
    (so ``import shedkit.models`` stays free of torch): ``__getattr__ = lazy_attributes(__name__, _LAZY)``."""
    import importlib
    import sys

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(f"{package}.{table[name]}"), name)
            sys.modules[package].__dict__[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
