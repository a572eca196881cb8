"""Selection methods, one module each, imported only when chosen (lm-eval-style registry)."""

from __future__ import annotations

import importlib

from shedkit.errors import ShedkitError
from shedkit.util.registry import unknown_name

# name -> module under shedkit.pipeline.methods exposing run(ctx) -> MethodResult
METHODS: dict[str, str] = {
    "random": "random",
    "shed-qocs": "shed",
    "shed-qwcs": "shed",
    "lobass": "lobass",
    "dsir": "dsir",
    "dq": "dq",
    "full": "full",
}


def get_method(name: str):
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    try:
        module = importlib.import_module(f"shedkit.pipeline.methods.{METHODS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"shedkit.pipeline.methods.{METHODS[name]}":
            raise ShedkitError(f"method '{name}' is not available in this version of shedkit") from None
        raise
    return module.run
