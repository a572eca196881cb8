"""Target dev sets of the methods that read one (SHED's valuation, first-order values, shed-hybrid)."""

from __future__ import annotations

from shedkit.errors import ShedkitError


def load_targets(targets) -> "object":
    """One DevSet from one or more target files of the same kind (loss rows or MC items)."""
    from shedkit.models import DevSet, read_dev

    if not targets:
        raise ShedkitError("SHED needs a target dev set: --target FILE (Alpaca-style rows or {query, choices, gold})")
    paths = [targets] if isinstance(targets, (str, bytes)) or not hasattr(targets, "__iter__") else list(targets)
    devs = [read_dev(p) for p in paths]
    if len(devs) == 1:
        return devs[0]
    if len({d.kind for d in devs}) != 1:
        raise ShedkitError("all --target files must be of one kind (all loss rows or all multiple-choice)")
    return DevSet(
        records=tuple(r for d in devs for r in d.records), items=tuple(i for d in devs for i in d.items),
        source="+".join(str(p) for p in paths),
    )
