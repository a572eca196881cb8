"""LoBaSS learnability selection: score, loss guards, per-group quotas. Pure numpy (no torch).

Score (Zhou et al., arXiv 2310.13008): ``S = (L_base - L_ref) / L_base = 1 - L_ref / L_base``
where ``L_base`` and ``L_ref`` are a row's mean response-token loss under the base model and
under the reference model (the base fine-tuned on the pool). High S: the reference learned the
row well relative to how hard it was for the base model.

Selection = top ``n`` by S among the *eligible* rows, with three layers:

1. **defined**: rows whose losses are missing, non-finite, or whose ``L_base <= 0`` have no
   score; they are never selected (the caller counts them as skipped).
2. **guards**: ``easy_quantile = q`` drops the ``floor(q * m)`` defined rows with the lowest
   ``L_base`` ("too easy"), ``hard_quantile`` the ``floor(q * m)`` with the highest ("too
   hard"), ``m`` = number of defined rows. Counts are exact: rows with equal ``L_base`` are
   ranked by position (lower position = lower rank). The guards are taken over the whole
   pool, not per group.
3. **quotas** (optional): rows carry a group label and each group gets a share of ``n``
   (shares are normalised to sum 1). Counts are the shares times ``n`` rounded by the largest
   remainder method (Hamilton), so they sum to exactly ``n``. A group with fewer eligible rows
   than its quota is taken whole, and what it cannot fill is handed to the other groups in
   proportion to their shares (repeated until every group fits); the rounding happens last,
   on the final real-valued quotas. Groups not named in the quota (share 0) are never
   selected; with group labels but no quota, each group's share is its share of the pool
   (stratified selection). Quotas apply after the guards: a group's rows are its eligible rows.

Every function returns exactly ``n`` distinct positions or raises a ``ShedkitError`` saying
how many rows were left and which setting to relax. Ties in S are broken by row position
(the lower position wins), so the selection is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from shedkit.errors import ShedkitError
from shedkit.selectors.samplers import topk_select


def learnability(loss_base, loss_ref) -> np.ndarray:
    """``1 - loss_ref / loss_base`` per row; NaN where it is undefined (a loss missing or not
    finite, or ``loss_base <= 0``). Use :func:`defined_mask` to find those rows."""
    base = np.asarray(loss_base, dtype=np.float64)
    ref = np.asarray(loss_ref, dtype=np.float64)
    if base.shape != ref.shape or base.ndim != 1:
        raise ValueError(f"loss_base and loss_ref must be 1-D of one length, got {base.shape} and {ref.shape}")
    ok = defined_mask(base, ref)
    out = np.full(base.shape, np.nan)
    out[ok] = 1.0 - ref[ok] / base[ok]
    return out


def defined_mask(loss_base, loss_ref) -> np.ndarray:
    """Rows where learnability is defined: both losses finite and ``loss_base > 0``."""
    base = np.asarray(loss_base, dtype=np.float64)
    ref = np.asarray(loss_ref, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(base) & np.isfinite(ref) & (base > 0)


def _check_quantile(name: str, q: float) -> float:
    q = float(q)
    if math.isnan(q) or not 0.0 <= q < 1.0:
        raise ShedkitError(f"{name} must be in [0, 1), got {q}")
    return q


def guard_masks(loss_base, easy_quantile: float = 0.0, hard_quantile: float = 0.0, defined=None) -> tuple[np.ndarray, np.ndarray]:
    """``(too_easy, too_hard)``: the rows each guard drops (see the module docstring). Only
    rows in ``defined`` (default: finite ``loss_base``) count towards the quantiles."""
    easy = _check_quantile("easy_quantile", easy_quantile)
    hard = _check_quantile("hard_quantile", hard_quantile)
    if easy + hard >= 1.0:
        raise ShedkitError(f"easy_quantile + hard_quantile must be < 1 (got {easy} + {hard}): nothing would be left")
    base = np.asarray(loss_base, dtype=np.float64)
    ok = np.isfinite(base) if defined is None else np.asarray(defined, dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((idx, base[idx]))]  # base loss ascending, then position
    m = len(order)
    n_easy, n_hard = _count(easy, m), _count(hard, m)
    too_easy = np.zeros(len(base), dtype=bool)
    too_hard = np.zeros(len(base), dtype=bool)
    too_easy[order[:n_easy]] = True
    too_hard[order[m - n_hard :]] = True
    return too_easy, too_hard


def guard_mask(loss_base, easy_quantile: float = 0.0, hard_quantile: float = 0.0, defined=None) -> np.ndarray:
    """Rows that are defined and survive both guards."""
    base = np.asarray(loss_base, dtype=np.float64)
    ok = np.isfinite(base) if defined is None else np.asarray(defined, dtype=bool)
    too_easy, too_hard = guard_masks(base, easy_quantile, hard_quantile, ok)
    return ok & ~too_easy & ~too_hard


def _count(q: float, m: int) -> int:
    """floor(q * m), exact for decimal q (0.1 * 30 is 3, not 3.0000000000000004 -> 3 either way)."""
    return int(Fraction(str(q)) * m)


def parse_quota(spec: Any) -> dict[str, float]:
    """``{"alpaca": 0.7, "gsm8k": 0.3}`` from a mapping, a ``"GROUP=SHARE"`` string (commas
    separate several) or a list of such strings. Shares are normalised to sum 1."""
    if spec is None:
        return {}
    raw: dict[str, float] = {}
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        parts = [spec] if isinstance(spec, str) else list(spec)
        items = []
        for part in parts:
            for piece in str(part).split(","):
                piece = piece.strip()
                if not piece:
                    continue
                group, sep, share = piece.rpartition("=")
                if not sep or not group.strip():
                    raise ShedkitError(f"quota {piece!r}: expected GROUP=SHARE, e.g. alpaca=0.7")
                items.append((group.strip(), share.strip()))
    for group, share in items:
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise ShedkitError(f"quota for group {group!r}: share {share!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ShedkitError(f"quota for group {group!r}: share must be a finite number >= 0, got {share!r}")
        if group in raw:
            raise ShedkitError(f"quota names group {group!r} twice")
        raw[group] = value
    total = sum(raw.values())
    if raw and total <= 0:
        raise ShedkitError("quota shares sum to 0; give at least one group a positive share")
    return {g: v / total for g, v in raw.items()}


def _frac(x) -> Fraction:
    """A share as an exact fraction of its decimal text (0.7 -> 7/10, not the nearest double)."""
    if isinstance(x, (int, Fraction)):
        return Fraction(x)
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"weights must be finite, got {x}")
    return Fraction(repr(x))


def largest_remainder(weights: Mapping[Hashable, float], n: int) -> dict[Hashable, int]:
    """Integers proportional to ``weights`` summing to exactly ``n`` (Hamilton's method), in
    exact rational arithmetic. Remainder ties go to the larger weight, then to the earlier
    key in ``weights``' order."""
    keys = list(weights)
    w = [_frac(weights[k]) for k in keys]
    total = sum(w, Fraction(0))
    if n < 0 or any(x < 0 for x in w) or (n > 0 and total <= 0):
        raise ValueError(f"cannot split {n} over weights {dict(weights)}")
    if n == 0:
        return {k: 0 for k in keys}
    exact = [x * n / total for x in w]
    counts = [int(e) for e in exact]  # floor (all >= 0)
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - counts[i]), -w[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return {k: c for k, c in zip(keys, counts)}


def quota_counts(shares: Mapping[Hashable, float], available: Mapping[Hashable, int], n: int) -> dict[Hashable, int]:
    """How many rows each group contributes: exactly ``n`` in all, none above its
    ``available`` rows. A group whose quota exceeds its rows is taken whole and the rest is
    shared among the other groups by their shares, until every group fits; then the final
    quotas are rounded by the largest remainder."""
    weight = {g: _frac(s) for g, s in shares.items() if s > 0}
    cap = {g: int(available.get(g, 0)) for g in weight}
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if sum(cap.values()) < n:
        have = ", ".join(f"{g}: {cap[g]}" for g in weight)
        raise ShedkitError(
            f"the quota groups have {sum(cap.values())} eligible rows in all ({have}), fewer than the budget {n}; "
            "lower the budget, relax the guards, or give other groups a share"
        )
    whole: dict[Hashable, int] = {}  # groups taken whole
    while True:
        open_groups = [g for g in weight if g not in whole]
        rest = n - sum(whole.values())
        total = sum((weight[g] for g in open_groups), Fraction(0))
        short = [g for g in open_groups if rest * weight[g] > cap[g] * total]
        if not short:
            break
        whole.update({g: cap[g] for g in short})
    counts = dict(whole)
    if open_groups:  # every open group's exact quota <= its rows, so rounding up stays within them
        counts.update(largest_remainder({g: weight[g] for g in open_groups}, rest))
    return {g: counts.get(g, 0) for g in weight}


@dataclass
class LearnabilitySelection:
    """What :func:`select_learnable` chose and why."""

    selected: np.ndarray  # positions, best score first; exactly n
    scores: np.ndarray  # learnability per row (NaN where undefined)
    eligible: np.ndarray  # bool per row: defined, kept by the guards, in a quota group
    excluded: list[str]  # per row: "" or why it cannot be selected (EXCLUSIONS)
    group_selected: dict[str, int] = field(default_factory=dict)  # rows selected per group (quotas)
    group_eligible: dict[str, int] = field(default_factory=dict)  # eligible rows per group (quotas)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eligible": int(self.eligible.sum())}
        out.update({f"excluded_{why.replace('-', '_')}": self.excluded.count(why) for why in EXCLUSIONS})
        if self.group_selected:
            out["group_selected"] = self.group_selected
            out["group_eligible"] = self.group_eligible
        return out


EXCLUSIONS = ("undefined", "easy", "hard", "no-quota")


def select_learnable(
    loss_base,
    loss_ref,
    n: int,
    *,
    easy_quantile: float = 0.0,
    hard_quantile: float = 0.0,
    groups: Sequence[Any] | None = None,
    quota: Any = None,
) -> LearnabilitySelection:
    """Top ``n`` rows by learnability after the guards, under per-group quotas if given.

    groups -- a label per row (compared as strings); with ``quota`` None, each group's share
              is its share of the pool (stratified selection).
    quota  -- shares per group (anything :func:`parse_quota` reads); needs ``groups``.
    """
    base = np.asarray(loss_base, dtype=np.float64)
    return select_by_score(learnability(base, loss_ref), n, guard_loss=base, easy_quantile=easy_quantile,
                           hard_quantile=hard_quantile, groups=groups, quota=quota)


def select_by_score(
    scores,
    n: int,
    *,
    guard_loss=None,
    easy_quantile: float = 0.0,
    hard_quantile: float = 0.0,
    groups: Sequence[Any] | None = None,
    quota: Any = None,
) -> LearnabilitySelection:
    """Top ``n`` rows by any score (NaN = undefined), with the same guards (on ``guard_loss``,
    a base loss per row) and quotas as :func:`select_learnable`."""
    scores = np.asarray(scores, dtype=np.float64)
    size = len(scores)
    n = int(n)
    if not 0 <= n <= size:
        raise ShedkitError(f"budget {n} is outside [0, {size}]")
    defined = np.isfinite(scores)
    if guard_loss is None:
        if easy_quantile or hard_quantile:
            raise ShedkitError("the easy/hard guards need a base loss per row")
        base = np.zeros(size)
    else:
        base = np.asarray(guard_loss, dtype=np.float64)
        defined &= np.isfinite(base)
    too_easy, too_hard = guard_masks(base, easy_quantile, hard_quantile, defined)
    excluded = np.full(size, "", dtype=object)
    excluded[~defined] = "undefined"
    excluded[too_easy] = "easy"
    excluded[too_hard] = "hard"
    eligible = defined & ~too_easy & ~too_hard
    if groups is None:
        if quota:
            raise ShedkitError("a quota needs group labels (quota_by: a column of the pool rows)")
        _need(eligible, n, excluded)
        return LearnabilitySelection(_top(scores, eligible, n), scores, eligible, excluded.tolist())

    labels = np.array([str(g) for g in groups], dtype=object)
    if len(labels) != size:
        raise ValueError(f"{len(labels)} group labels for {size} rows")
    present = list(dict.fromkeys(labels.tolist()))
    shares = parse_quota(quota)
    if not shares:
        shares = {g: float(np.count_nonzero(labels == g)) for g in present}
    missing = [g for g in shares if g not in present]
    if missing:
        raise ShedkitError(f"quota group(s) {missing} do not occur in the pool; groups present: {present[:20]}")
    in_quota = np.array([shares.get(g, 0.0) > 0 for g in labels.tolist()], dtype=bool)
    excluded[eligible & ~in_quota] = "no-quota"
    eligible &= in_quota
    _need(eligible, n, excluded)
    available = {g: int(np.count_nonzero(eligible & (labels == g))) for g in shares}
    counts = quota_counts(shares, available, n)
    picks = [_top(scores, eligible & (labels == g), c) for g, c in counts.items() if c]
    chosen = np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)
    chosen = chosen[np.lexsort((chosen, -scores[chosen]))]  # best first overall
    return LearnabilitySelection(chosen.astype(np.int64), scores, eligible, excluded.tolist(),
                                 group_selected={str(g): int(c) for g, c in counts.items()},
                                 group_eligible={str(g): int(a) for g, a in available.items()})


def _top(scores: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best rows of ``mask`` by score, best first, ties to the lower position."""
    idx = np.flatnonzero(mask)
    return idx[topk_select(scores[idx], n)]


def _need(eligible: np.ndarray, n: int, excluded: np.ndarray) -> None:
    have = int(eligible.sum())
    if have >= n:
        return
    why = [f"{int(np.count_nonzero(excluded == w))} {w}" for w in EXCLUSIONS if np.any(excluded == w)]
    raise ShedkitError(
        f"only {have} of {len(eligible)} rows are eligible for selection, fewer than the budget {n} "
        f"(excluded: {', '.join(why) or 'none'}; 'undefined' = no loss, 'easy'/'hard' = the guards, "
        "'no-quota' = a group without a share); lower the budget or the guard quantiles"
    )
