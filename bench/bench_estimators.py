"""How many utility evaluations ("fine-tunes") each Shapley estimator needs to rank the proxies.

On ``ProxyLikeGame`` (K proxies of varying quality, ~15% harmful, diminishing returns within
topics, deterministic per-subset noise) this measures, for SHED's removal estimator (k = 1, 3,
5), plain permutation MC, truncated MC and antithetic MC:

- the evaluations each needs before the Spearman correlation of its values with a long
  reference run first reaches the target (0.9), and before it stays there;
- the correlation SHED's fixed loop reaches after T permutations (T × K/k fine-tunes);
- where the ``RankStability(0.9)`` stopping rule (split-half Spearman) would have stopped, and
  the true correlation at that point (is the rule too early or too late?).

The reference is a long antithetic run (its own split-half Spearman is printed). Evaluations are
distinct subsets used, as an estimator with a warm cache would count fine-tunes.

    PYTHONPATH=src .venv/bin/python bench/bench_estimators.py                 # K = 30 and 60
    PYTHONPATH=src .venv/bin/python bench/bench_estimators.py --players 60 --noise 0.05
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from shedkit.value import (
    AntitheticMonteCarlo,
    MaxEvaluations,
    MaxPermutations,
    PermutationMonteCarlo,
    ProxyLikeGame,
    ShedRemoval,
    StoppingRule,
    TruncatedMonteCarlo,
    spearman,
)

ESTIMATORS = {
    "shed k=1": lambda **kw: ShedRemoval(removal_k=1, **kw),
    "shed k=3": lambda **kw: ShedRemoval(removal_k=3, **kw),
    "shed k=5": lambda **kw: ShedRemoval(removal_k=5, **kw),
    "mc": lambda **kw: PermutationMonteCarlo(**kw),
    "tmc rtol=0.05": lambda **kw: TruncatedMonteCarlo(rtol=0.05, **kw),
    "antithetic": lambda **kw: AntitheticMonteCarlo(**kw),
}


class Trace(StoppingRule):
    """Never fires; records (permutations, evaluations, Spearman vs reference, split-half
    Spearman) after every sample. Put it first in an ``|`` so it is always consulted."""

    def __init__(self, reference: np.ndarray):
        self.reference, self.rows = reference, []

    def check(self, progress):
        if not self.rows or self.rows[-1][0] != progress.n_permutations:
            rho = spearman(progress.values, self.reference) if progress.n_samples else np.nan
            self.rows.append(
                (progress.n_permutations, progress.n_evaluations, rho, progress.rank_stability())
            )
        return False

    def __str__(self):
        return "Trace"


def reference_values(game: ProxyLikeGame, permutations: int, out: Path) -> tuple[np.ndarray, float]:
    path = out / f"reference-K{len(game.players)}-seed{game.seed}-noise{game.noise}-T{permutations}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return np.array(data["values"]), data["split_half_spearman"]
    start = time.monotonic()
    result = AntitheticMonteCarlo(stop=MaxPermutations(permutations), seed=10_000).fit(game).result_
    data = {
        "values": result.values.tolist(),
        "split_half_spearman": result.rank_stability(),
        "seconds": time.monotonic() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return result.values, data["split_half_spearman"]


def first_reaching(rows, target, stay=False):
    """Evaluations (and permutations) when Spearman first reaches ``target`` (and, with
    ``stay``, never falls below it again within the budget); None if never."""
    rhos = np.array([r[2] for r in rows])
    ok = rhos >= target
    if stay:
        bad = np.nonzero(~ok)[0]
        idx = 0 if len(bad) == 0 else bad[-1] + 1
        if idx >= len(rows):
            return None
    else:
        hits = np.nonzero(ok)[0]
        if len(hits) == 0:
            return None
        idx = hits[0]
    return rows[idx][1], rows[idx][0]


def rule_stop(rows, threshold, min_samples=10, unit=1):
    """Where RankStability(threshold) would stop: (evaluations, true Spearman there)."""
    for perms, evals, rho, half in rows:
        if perms // unit >= min_samples and np.isfinite(half) and half >= threshold:
            return evals, rho
    return None


def bench(players: int, args, out: Path) -> dict:
    game = ProxyLikeGame(players, seed=args.game_seed, noise=args.noise)
    t0 = time.monotonic()
    reference, ref_stability = reference_values(game, args.reference_permutations, out)
    print(
        f"\n## K = {players} proxies, noise {args.noise}: reference = antithetic, "
        f"{args.reference_permutations} permutations (split-half Spearman {ref_stability:.4f}, "
        f"{time.monotonic() - t0:.0f}s)\n"
    )
    budget = args.budget_per_player * players
    figures = {}
    header = (
        f"| estimator | evals to ρ≥{args.target} (median [min–max] of {args.seeds} seeds) | "
        f"permutations T then | "
        f"evals to stay ≥{args.target} | ρ at T=10 perms (evals) | ρ at budget {budget} | "
        f"RankStability({args.target}) stops at evals (true ρ) |"
    )
    print(header)
    print("|" + "---|" * 7)
    for name, make in ESTIMATORS.items():
        reach, reach_perms, stay, at_t10, final, rule = [], [], [], [], [], []
        for seed in range(args.seeds):
            trace = Trace(reference)
            est = make(stop=trace | MaxEvaluations(budget), seed=seed)
            est.fit(game)
            rows = trace.rows
            hit = first_reaching(rows, args.target)
            reach.append(hit[0] if hit else np.inf)
            reach_perms.append(hit[1] if hit else np.inf)
            kept = first_reaching(rows, args.target, stay=True)
            stay.append(kept[0] if kept else np.inf)
            t10 = [r for r in rows if r[0] >= 10]
            if t10:
                at_t10.append((t10[0][2], t10[0][1]))
            final.append(rows[-1][2])
            stop = rule_stop(rows, args.target, unit=est.unit_size)
            rule.append(stop if stop else (np.inf, np.nan))
        figures[name] = {
            "evals_to_reach": reach,
            "permutations_to_reach": reach_perms,
            "evals_to_stay": stay,
            "rho_at_T10": at_t10,
            "rho_at_budget": final,
            "rank_stability_rule": rule,
        }

        def med(xs):
            xs = np.array(xs, dtype=float)
            body = "never" if np.isinf(np.median(xs)) else f"{np.median(xs):.0f}"
            lo, hi = np.min(xs), np.max(xs)
            span = f"[{lo:.0f}–{'∞' if np.isinf(hi) else f'{hi:.0f}'}]"
            return f"{body} {span}"

        t10_text = (
            f"{np.median([r for r, _ in at_t10]):.3f} ({np.median([e for _, e in at_t10]):.0f})"
            if at_t10 else "—"
        )
        rule_evals = np.array([e for e, _ in rule], dtype=float)
        rule_rho = np.array([r for _, r in rule], dtype=float)
        rule_text = (
            "never" if np.all(np.isinf(rule_evals))
            else f"{np.median(rule_evals[np.isfinite(rule_evals)]):.0f} "
                 f"({np.nanmedian(rule_rho):.3f})"
        )
        print(
            f"| {name} | {med(reach)} | {np.median(reach_perms):.0f} | {med(stay)} | {t10_text} | "
            f"{np.median(final):.3f} | {rule_text} |"
        )
    return {"players": players, "noise": args.noise, "reference_split_half": ref_stability,
            "budget": budget, "figures": figures}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, nargs="+", default=[30, 60], help="K proxies")
    parser.add_argument("--seeds", type=int, default=5, help="estimator seeds per configuration")
    parser.add_argument("--noise", type=float, default=0.02, help="per-subset score noise")
    parser.add_argument("--target", type=float, default=0.9, help="Spearman to reach")
    parser.add_argument("--budget-per-player", type=int, default=60,
                        help="evaluation budget per run, as a multiple of K")
    parser.add_argument("--reference-permutations", type=int, default=4000)
    parser.add_argument("--game-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-estimators"))
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = [bench(k, args, args.out) for k in args.players]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "figures.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                               default=float))
    print(f"\n{time.monotonic() - start:.0f}s; figures in {path}")


if __name__ == "__main__":
    main()
