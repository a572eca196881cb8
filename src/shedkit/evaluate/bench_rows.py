"""The rows of a ``shedkit bench`` table: which selection each row runs.

A row is named by a spec string:

- ``METHOD`` -- any method in the registry (``shedkit.pipeline.methods.METHODS``), so methods
  added to the registry later run in the bench without bench changes;
- ``METHOD@BUDGET`` -- the method at its own budget (``lobass@0.06``: 6% of the pool; an
  integer is a row count), instead of the bench's ``--budget``;
- a named variant (``VARIANTS``): ``dsir-per-token`` is DSIR with the per-token mean of the
  log weights (``dsir_normalize``), the plain ``dsir`` row being the faithful sum;
  ``shed-hybrid-filter`` is shed-hybrid with QWCS, the loss-ifd row score as a filter
  (row_keep 0.75) and random order; ``first-order-less`` is first-order with ``fo_normalize``
  less on the last 4 layers (``first-order-less-z``: its several targets reduced by the max of
  per-task z-scores), ``shed-hybrid-less`` shed-hybrid on those values (QWCS over
  their cluster sums, rows best-first). A variant's own options win over ``--option METHOD.x``
  (which sets the plain method's row); ``--option VARIANT.x`` overrides the variant;
- a reference row (``REFERENCES``): ``clean-random`` draws random rows among those the
  suite's ``pool_labels.jsonl`` calls clean. It reads the labels, which no method may, so it is
  not a method: it marks what a perfect noise filter followed by random sampling reaches, and
  calibrates the instrument (it must beat ``random`` on the test loss by more than the noise).
  ``mix-random`` draws random rows with exactly the source counts of another row's selection
  for the same seed (``--option mix-random.of=ROW``, default ``auto``; it reads the labels'
  ``source`` only): how much of that row's gain over ``random`` is the source mix it pulls
  towards, and how much is which rows it takes within each source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shedkit.errors import ShedkitError

REFERENCES = {
    "clean-random": "random rows among those pool_labels.jsonl calls clean (reads the labels: a reference row, not a method)",
    "mix-random": "random rows with the source counts of another row's selection, same seed (reads the source labels: "
                  "a reference row, not a method)",
}
MIX_RANDOM_OF = "auto"  # mix-random's default row to copy the source mix of
REFERENCE_OPTIONS = {"clean-random": (), "mix-random": ("of",)}  # what --option REF.KEY may set
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dsir-per-token": ("dsir", {"dsir_normalize": True}),
    # SHED's QWCS allocation; inside each cluster the quarter of rows that is worst by base loss
    # or by IFD is dropped (either filter), the rest sampled at random as SHED samples
    "shed-hybrid-filter": ("shed-hybrid", {"sampler": "qwcs", "row_score": "loss-ifd", "row_keep": 0.75,
                                           "row_order": "random"}),
    # first-order row values without the length bias (issue 23): LESS's Adam-preconditioned,
    # pool-centred unit directions, LoRA on the last 4 decoder layers (as bench_row_value measured)
    "first-order-less": ("first-order", {"fo_normalize": "less", "fo_layers": 4}),
    # the same with several targets (--shed-target a,b,c) reduced by the max of per-task z-scores
    # (one valuation with first-order-less: task_reduce is not in the cache key)
    "first-order-less-z": ("first-order", {"fo_normalize": "less", "fo_layers": 4, "fo_task_reduce": "max-z"}),
    # SHED's QWCS over cluster values summed from those less row values, rows best-first by them
    # (zero proxy fine-tunes); the warm-up recipe is first-order's own (1 epoch, lr 2e-4), so
    # both rows share one valuation per seed in a bench's cache
    "shed-hybrid-less": ("shed-hybrid", {"sampler": "qwcs", "row_score": "first-order", "cluster_value": "first-order",
                                         "fo_normalize": "less", "fo_layers": 4, "epochs": 1.0, "lr": 2e-4}),
}
# the table's rows in order; a row whose method is not in the registry at run time is left out
TABLE_ROWS = ("random", "clean-random", "mix-random", "auto", "dsir", "dsir-per-token", "dq", "lobass", "lobass@0.06", "lowest-loss", "ifd",
              "filtered-random", "first-order", "first-order-less", "first-order-less-z", "shed-qocs", "shed-qwcs", "shed-hybrid", "shed-hybrid-filter", "shed-hybrid-less", "full")


def target_names(shed_target: str) -> list[str]:
    """The dev targets ``--shed-target`` names (comma-separated: one per task)."""
    return [n.strip() for n in str(shed_target).split(",") if n.strip()]


@dataclass(frozen=True)
class BenchRow:
    label: str  # the spec as written: the row's name in every table
    method: str  # a registered method, or a REFERENCES name
    budget: str | float | int | None = None  # None: the bench's budget
    options: dict[str, Any] = field(default_factory=dict)  # the variant's options

    @property
    def reference(self) -> bool:
        return self.method in REFERENCES


def parse_budget(text: str) -> float | int:
    """``"0.06"`` -> 0.06 (a fraction), ``"300"`` -> 300 (rows)."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ShedkitError(f"budget {text!r}: expected a fraction in (0, 1) or a row count") from None
    if value <= 0:
        raise ShedkitError(f"budget {text!r} must be > 0")
    return value


def parse_row(spec: str) -> BenchRow:
    """A row spec (``dsir``, ``lobass@0.06``, ``dsir-per-token``, ``clean-random``) -> BenchRow;
    an unknown method raises with the registry's "did you mean"."""
    from shedkit.pipeline.methods import METHODS, get_method

    spec = spec.strip()
    name, at, budget = spec.partition("@")
    if at and not budget:
        raise ShedkitError(f"row {spec!r}: expected METHOD@BUDGET, e.g. lobass@0.06")
    method, options = VARIANTS.get(name, (name, {}))
    if method not in METHODS and method not in REFERENCES:
        get_method(method)  # raises with "did you mean"
    return BenchRow(spec, method, parse_budget(budget) if at else None, dict(options))


def default_rows() -> tuple[str, ...]:
    """``TABLE_ROWS`` less the rows whose method is not in the registry now."""
    from shedkit.pipeline.methods import METHODS

    keep = []
    for spec in TABLE_ROWS:
        name = spec.partition("@")[0]
        method = VARIANTS.get(name, (name, {}))[0]
        if method in METHODS or method in REFERENCES:
            keep.append(spec)
    return tuple(keep)


def clean_random_positions(records, labels: list[dict], budget: int, seed: int) -> list[int]:
    """``budget`` positions into ``records`` drawn uniformly (seeded) among the records whose
    input line is labelled clean; sorted. Raises when fewer clean rows than ``budget`` exist."""
    if not labels:
        raise ShedkitError("clean-random needs the suite's pool_labels.jsonl")
    clean = [i for i, r in enumerate(records) if labels[r.index].get("label") == "clean"]
    if len(clean) < budget:
        raise ShedkitError(f"clean-random: {budget} rows asked, only {len(clean)} clean rows in the pool")
    picked = np.random.default_rng(seed).choice(len(clean), size=budget, replace=False)
    return sorted(clean[i] for i in picked)


def mix_random_positions(records, labels: list[dict], of_rows: list[int], seed: int) -> list[int]:
    """``len(of_rows)`` positions into ``records``, drawn uniformly (seeded) within each source
    so that the per-source counts equal those of the input lines ``of_rows`` (another
    selection); sorted. Raises when a source has fewer rows in the pool than asked."""
    if not labels or not all("source" in r for r in labels):
        raise ShedkitError("mix-random needs the suite's pool_labels.jsonl with a 'source' per line")
    want: dict[str, int] = {}
    for line in of_rows:
        src = str(labels[line]["source"])
        want[src] = want.get(src, 0) + 1
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for src in sorted(want):
        members = [i for i, r in enumerate(records) if str(labels[r.index]["source"]) == src]
        if len(members) < want[src]:
            raise ShedkitError(f"mix-random: {want[src]} '{src}' rows asked, only {len(members)} in the pool")
        picked += [members[i] for i in rng.choice(len(members), size=want[src], replace=False)]
    return sorted(picked)
