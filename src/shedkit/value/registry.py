"""Valuations by name: ``get_valuation("first-order")`` imports its class only when asked.

Each entry maps a name to a ``"module:Class"`` string, so that listing or choosing a valuation
never imports the modules of the others (some need torch). Adding a valuation is one class and
one line here (or one ``register_valuation`` call from a plug-in); ``make_estimator`` and the
``--estimator`` option choose from this same table.
"""

from __future__ import annotations

import difflib
import importlib

from shedkit.errors import ShedkitError

VALUATIONS: dict[str, str] = {
    "shed": "shedkit.value.estimators:ShedRemoval",
    "mc": "shedkit.value.estimators:PermutationMonteCarlo",
    "tmc": "shedkit.value.estimators:TruncatedMonteCarlo",
    "antithetic": "shedkit.value.estimators:AntitheticMonteCarlo",
    "msr": "shedkit.value.subset_valuations:MSRBanzhaf",
    "stratified": "shedkit.value.subset_valuations:StratifiedShapley",
    "cv": "shedkit.value.subset_valuations:ControlVariateShapley",
    "regression": "shedkit.value.subset_valuations:RegressionShapley",
    "first-order": "shedkit.value.first_order:FirstOrderValuation",
}


def lookup(registry: dict, name: str, kind: str):
    """``registry[name]``, or a ShedkitError listing the choices with a "did you mean" hint."""
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ShedkitError(f"unknown {kind} '{name}' (choose from {', '.join(registry)}){hint}") from None


def import_object(target: str):
    """The object a ``"package.module:Name"`` string points to (imported now)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ShedkitError(f"'{target}' is not of the form 'package.module:Name'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ShedkitError(f"module '{module_name}' has no '{attr}'") from None


def get_valuation(name: str) -> type:
    """The valuation class registered under ``name`` (its module is imported now, not before)."""
    return import_object(lookup(VALUATIONS, name, "valuation"))


def register_valuation(name: str, target: str) -> None:
    """Add a valuation: ``register_valuation("my-value", "mypkg.values:MyValuation")``."""
    if ":" not in target:
        raise ShedkitError(f"'{target}' is not of the form 'package.module:Class'")
    VALUATIONS[name] = target


__all__ = ["VALUATIONS", "get_valuation", "import_object", "lookup", "register_valuation"]
