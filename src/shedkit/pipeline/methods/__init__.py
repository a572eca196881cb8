"""Selection methods, one module each, imported only when chosen (lm-eval-style registry)."""

from __future__ import annotations

import difflib
import importlib

from shedkit.errors import ShedkitError

# name -> module under shedkit.pipeline.methods exposing run(ctx) -> MethodResult
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
}


def get_method(name: str):
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ShedkitError(f"unknown method '{name}'{hint}; choose one of: {', '.join(METHODS)}")
    try:
        module = importlib.import_module(f"shedkit.pipeline.methods.{METHODS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"shedkit.pipeline.methods.{METHODS[name]}":
            raise ShedkitError(f"method '{name}' is not available in this version of shedkit") from None
        raise
    return module.run
