"""Selection methods, one module each, imported only when chosen (lm-eval-style registry).

A method module defines ``run(ctx) -> MethodResult`` and ``Options``, the dataclass of the
options it reads (see ``shedkit.pipeline.options``), and may define ``VERSION``, a string to
bump whenever a change alters which rows the method selects: caches of selections (the
benchmark's cells) key on it, so they recompute rather than reuse a stale subset. Its
``plan(planner) -> list[Stage]`` names the stages ``--dry-run`` estimates (built from
``pipeline/plan_models.py``, ``plan_training.py`` and ``plan_data.py``; see ``pipeline/planning.py``). Add a
method: copy ``dq.py``, add a line to ``METHODS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from shedkit.errors import ShedkitError
from shedkit.util.registry import unknown_name

# name -> module under shedkit.pipeline.methods exposing run(ctx) -> MethodResult and Options
METHODS: dict[str, str] = {
    "random": "random",
    "shed-qocs": "shed",
    "shed-qwcs": "shed",
    "lobass": "lobass",
    "dsir": "dsir",
    "dq": "dq",
    "full": "full",
    "first-order": "first_order",
    "shed-hybrid": "shed_hybrid",
    "lowest-loss": "row_filters",
    "ifd": "row_filters",
    "filtered-random": "row_filters",
    "auto": "auto",  # the recommended preset (auto.AUTO); each preset also answers to its own name
    "recommended-v1": "auto",
}


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    try:
        return importlib.import_module(f"shedkit.pipeline.methods.{METHODS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"shedkit.pipeline.methods.{METHODS[name]}":
            raise ShedkitError(f"method '{name}' is not available in this version of shedkit") from None
        raise


def get_method(name: str):
    """The ``run`` function of method ``name`` ("did you mean" on a typo)."""
    return method_module(name).run


def method_version(name: str) -> str | None:
    """Method ``name``'s ``VERSION`` (None where its module declares none: the first version)."""
    version = getattr(method_module(name), "VERSION", None)
    return None if version is None else str(version)


def options_class(name: str) -> type | None:
    """The options dataclass of method ``name`` (None: its module declares none, nothing is checked)."""
    return getattr(method_module(name), "Options", None)
