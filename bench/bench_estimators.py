"""How many utility evaluations ("fine-tunes") each Shapley estimator needs to rank the proxies.

For each estimator and seed, the run records after **every** evaluation the Spearman
correlation of its current values with a reference, and reports:

- the evaluations (distinct subsets, ∅ and the full set included) at which Spearman first
  reaches the target (0.9), median and range over the seeds;
- the ratio of that to SHED's fixed loop, T × K/k fine-tunes (T = 10 permutations, k = 1 and
  the paper-like k), the goal of issue 11 being ≤ 0.1;
- the Spearman SHED's fixed loop itself reaches.

Two utilities:

- ``--game`` (default): ``ProxyLikeGame`` (K proxies of varying quality, ~15% harmful,
  diminishing returns within topics, deterministic per-subset noise); the reference is a long
  antithetic run (its split-half Spearman is reported).
- ``--real``: v(S) = minus the dev loss of SmolLM2-135M after one LoRA epoch on proxies S, K
  proxies drawn (seeded) from noisy-mix-v1's pool, a few rows of its Alpaca dev target. Every
  v(S) is cached on disk, so estimators share evaluations: with ``--exact`` (K ≤ 12) all 2^K
  subsets are evaluated once (the pool of subsets), the reference is the exact Shapley value,
  and every estimator afterwards runs from the cache; its "fine-tunes" are the distinct
  subsets it used. Heavy: run under ``flock /tmp/shedkit-heavy.lock``.

    PYTHONPATH=src .venv/bin/python bench/bench_estimators.py --players 30 60
    flock /tmp/shedkit-heavy.lock env PYTHONPATH=src .venv/bin/python bench/bench_estimators.py \\
        --real --players 8 --exact --dev-rows 8 --max-length 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from shedkit.value import (
    AntitheticMonteCarlo,
    ControlVariateShapley,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    MSRBanzhaf,
    PermutationMonteCarlo,
    ProxyLikeGame,
    RegressionShapley,
    ShedRemoval,
    StoppingRule,
    StratifiedShapley,
    TruncatedMonteCarlo,
    exact_shapley,
    spearman,
)

T_FIXED = 10  # SHED's fixed number of permutations (shedkit's default T)


def estimators(paper_k: int, surrogate: dict | None = None) -> dict:
    extra = {} if surrogate is None else {
        "cv (first-order surrogate)": lambda **kw: ControlVariateShapley(surrogate=surrogate, **kw)}
    return {
        "shed k=1": lambda **kw: ShedRemoval(removal_k=1, **kw),
        f"shed k={paper_k}": lambda **kw: ShedRemoval(removal_k=paper_k, **kw),
        "shed k=1 truncated 0.05": lambda **kw: ShedRemoval(removal_k=1, truncation=0.05, **kw),
        "mc": lambda **kw: PermutationMonteCarlo(**kw),
        "tmc rtol=0.05": lambda **kw: TruncatedMonteCarlo(rtol=0.05, **kw),
        "antithetic": lambda **kw: AntitheticMonteCarlo(**kw),
        "msr (Banzhaf)": lambda **kw: MSRBanzhaf(**kw),
        "stratified": lambda **kw: StratifiedShapley(**kw),
        "cv (linear surrogate)": lambda **kw: ControlVariateShapley(**kw),
        "regression (KernelSHAP, paired)": lambda **kw: RegressionShapley(**kw),
        **extra,
    }


class Trace(StoppingRule):
    """Never fires; records (evaluations, Spearman vs reference) every time the loop checks
    the rule: after every evaluation and after every folded sample, so an estimator that keeps
    improving from cached subsets (a finite pool) is traced too. Put it first in an ``|``."""

    def __init__(self, reference: np.ndarray):
        self.reference, self.rows = reference, []

    def check(self, progress):
        rho = spearman(progress.values, self.reference) if progress.n_samples else float("nan")
        self.rows.append((progress.n_evaluations, rho))
        return False

    def __str__(self):
        return "Trace"


def first_reaching(rows, target) -> float:
    for evals, rho in rows:
        if np.isfinite(rho) and rho >= target:
            return float(evals)
    return float("inf")


def staying(rows, target) -> float:
    """Evaluations from which Spearman stays ≥ target until the budget ends (inf if never)."""
    ok = np.array([np.isfinite(r) and r >= target for _, r in rows])
    bad = np.nonzero(~ok)[0]
    idx = 0 if len(bad) == 0 else bad[-1] + 1
    return float(rows[idx][0]) if idx < len(rows) else float("inf")


def _span(xs) -> str:
    med, hi = float(np.median(xs)), max(xs)
    if not np.isfinite(med):
        return f"never ({int(np.sum(np.isfinite(xs)))}/{len(xs)} seeds)"
    return f"{med:.0f} [{min(xs):.0f}–{'never' if np.isinf(hi) else f'{hi:.0f}'}]"


def fixed_loop(utility, players, reference, k: int, seeds) -> tuple[float, list[float]]:
    """SHED's fixed loop: T permutations, k removed per step. Its fine-tunes and Spearman."""
    rhos, evals = [], []
    for seed in seeds:
        r = ShedRemoval(removal_k=k, stop=MaxPermutations(T_FIXED), seed=seed).fit(utility, players).result_
        rhos.append(spearman(r.values, reference))
        evals.append(r.n_evaluations)
    return float(np.median(evals)), rhos


def run_table(utility, players, reference, args, label: str, surrogate: dict | None = None) -> dict:
    K = len(players)
    budget = int(round(args.budget_per_player * K))
    fixed = {k: T_FIXED * int(np.ceil(K / k)) for k in (1, args.paper_k)}
    loop_seeds = range(args.seeds if args.fixed_loop_seeds is None else args.fixed_loop_seeds)
    loops = {k: fixed_loop(utility, players, reference, k, loop_seeds) for k in fixed} if len(loop_seeds) else {}
    print(f"\n### {label}\n")
    if loops:
        print(f"SHED's fixed loop (T={T_FIXED}, {len(loop_seeds)} seed(s)): " + "; ".join(
            f"k={k}: T×K/k = {fixed[k]} fine-tunes ({loops[k][0]:.0f} distinct), Spearman "
            f"{np.median(loops[k][1]):.3f} [{min(loops[k][1]):.3f}–{max(loops[k][1]):.3f}]" for k in fixed))
    if surrogate is not None:
        alone = spearman(np.array([surrogate[p] for p in players]), reference)
        print(f"First-order values alone (no fine-tune, the surrogate's ranking): Spearman {alone:.3f}")
    print()
    print(f"| estimator | fine-tunes to first reach Spearman ≥ {args.target} (median [min–max], "
          f"{args.seeds} seeds) | ÷ T·K/1 = {fixed[1]} | ÷ T·K/{args.paper_k} = {fixed[args.paper_k]} "
          f"| fine-tunes from which it stays ≥ {args.target} | Spearman at budget {budget} |")
    print("|---|---|---|---|---|---|")
    figures = {}
    for name, make in estimators(args.paper_k, surrogate).items():
        if args.only and not any(o in name for o in args.only):
            continue
        reach, stay, final = [], [], []
        for seed in range(args.seeds):
            tracer = Trace(reference)
            stop = tracer | MaxEvaluations(budget) | MaxPermutations(args.max_permutations)
            make(stop=stop, seed=seed).fit(utility, players)
            reach.append(first_reaching(tracer.rows, args.target))
            stay.append(staying(tracer.rows, args.target))
            final.append(tracer.rows[-1][1] if tracer.rows else float("nan"))
        med = float(np.median(reach))
        r1 = f"{med / fixed[1]:.3f}" if np.isfinite(med) else "—"
        rk = f"{med / fixed[args.paper_k]:.3f}" if np.isfinite(med) else "—"
        print(f"| {name} | {_span(reach)} | {r1} | {rk} | {_span(stay)} | {np.nanmedian(final):.3f} |")
        figures[name] = {"evals_to_reach": reach, "evals_to_stay": stay, "rho_at_budget": final}
    out = {"label": label, "players": K, "budget": budget, "fixed_loop": {
        str(k): {"fine_tunes": fixed[k], "distinct": loops[k][0], "spearman": loops[k][1]} for k in loops},
        "figures": figures}
    if surrogate is not None:
        out["first_order_alone_spearman"] = alone
    return out


# -- synthetic --------------------------------------------------------------------------------


def game_reference(game, permutations: int, out: Path) -> tuple[np.ndarray, float]:
    path = out / f"reference-K{len(game.players)}-seed{game.seed}-noise{game.noise}-T{permutations}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return np.array(data["values"]), data["split_half_spearman"]
    result = AntitheticMonteCarlo(stop=MaxPermutations(permutations), seed=10_000).fit(game).result_
    data = {"values": result.values.tolist(), "split_half_spearman": result.rank_stability()}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return result.values, data["split_half_spearman"]


def bench_game(players: int, args) -> dict:
    game = ProxyLikeGame(players, seed=args.game_seed, noise=args.noise)
    reference, split_half = game_reference(game, args.reference_permutations, args.out)
    label = (f"ProxyLikeGame K={players}, noise {args.noise}: reference = antithetic, "
             f"{args.reference_permutations} permutations, split-half Spearman {split_half:.4f}")
    table = run_table(game, game.players, reference, args, label)
    table["reference_split_half"] = split_half
    return table


# -- real utility -----------------------------------------------------------------------------


def real_utility(players: int, args):
    from shedkit.data import load_pool
    from shedkit.models import DevSet, SubsetScore, TrainConfig, read_dev
    from shedkit.value import CachedUtility

    data = Path(args.data)
    pool = load_pool(data / "pool.jsonl", skip_empty=True)
    labels = [json.loads(line)["label"] for line in open(data / "pool_labels.jsonl")]
    rng = np.random.default_rng(args.proxy_seed)
    picked = sorted(rng.choice(len(pool.records), size=players, replace=False).tolist())
    proxies = [pool.records[i] for i in picked]
    chosen = [r.index for r in proxies]  # line numbers of the pool file
    dev = read_dev(data / "target_alpaca_dev.jsonl")
    dev = DevSet(records=dev.records[: args.dev_rows], source=f"{dev.source}[:{args.dev_rows}]")
    extra = {} if args.lr is None else {"lr": args.lr}
    train = TrainConfig(epochs=1.0, max_length=args.max_length, precision=args.precision, **extra)
    score = SubsetScore("smollm2-135m", proxies, dev, train, "loss", seed=0)
    settings_hash = score.settings_hash
    settings_hash = settings_hash() if callable(settings_hash) else settings_hash
    utility = CachedUtility(score, args.cache_dir, settings_hash, players=[p.id for p in proxies])
    info = {"proxy_lines": chosen, "proxy_labels": [labels[i] for i in chosen], "dev_rows": args.dev_rows,
            "max_length": args.max_length, "precision": args.precision, "lr": train.lr,
            "settings_hash": settings_hash}
    utility.bench_inputs = {"proxies": proxies, "dev": dev, "train": train}  # for the first-order surrogate
    return utility, info


def first_order_surrogate(utility, args) -> tuple[dict, dict]:
    """Per-proxy first-order values (TracIn over a warm-up LoRA fine-tune on all K proxies,
    the same dev rows and recipe): the control variate's given surrogate, computed with no
    subset fine-tune. Cached under --cache-dir like everything else."""
    from shedkit.value.first_order import FirstOrderValuation

    inputs = utility.bench_inputs
    fo = FirstOrderValuation("smollm2-135m", inputs["train"], warmup_rows=len(inputs["proxies"]),
                             checkpoints=2, cache_dir=args.cache_dir, seed=0, progress=False)
    fo.fit(inputs["proxies"], inputs["dev"])
    values = {r.id: float(v) for r, v in zip(inputs["proxies"], fo.raw_)}
    return values, {"seconds": fo.stats_["seconds"], "gradients_computed": fo.stats_["row_gradients_computed"],
                    "warmup": fo.stats_["warmup"], "values": values}


def real_reference(utility, args, info: dict) -> tuple[np.ndarray, float, int]:
    """The long antithetic reference on the real utility. Its permutations come from a fixed
    seed and every v(S) is cached, so a run cut by ``--reference-seconds`` resumes where it
    stopped (the permutations already walked cost nothing again): the reference can be
    accumulated over several sessions. Its split-half Spearman is recorded as it grows
    (``reference-K*.json`` in --out)."""
    stop = MaxPermutations(args.reference_permutations)
    if args.reference_seconds:
        stop = stop | MaxTime(args.reference_seconds)
    result = AntitheticMonteCarlo(stop=stop, seed=10_000, progress=True).fit(utility).result_
    done = int(result.n_permutations)  # antithetic: pairs = done / 2
    values, split_half = result.values, result.rank_stability()
    path = args.out / f"reference-K{len(utility.players)}-proxyseed{args.proxy_seed}.json"
    history = json.loads(path.read_text())["history"] if path.exists() else []
    history.append({"permutations": done, "split_half_spearman": split_half, "computed": utility.computed,
                    "fine_tunes_cached": result.n_evaluations, "load": machine()["load_average"],
                    "seconds_per_fine_tune": utility.compute_seconds / max(1, utility.computed)})
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"values": values.tolist(), "split_half_spearman": split_half,
                                "permutations": done, "history": history, "utility": info}, indent=1,
                               default=float))
    print(f"reference: {done} permutations, split-half Spearman {split_half:.4f}; {path}", flush=True)
    return values, split_half, done


def bench_real(players: int, args) -> dict:
    utility, info = real_utility(players, args)
    ids = utility.players
    start = time.monotonic()
    if args.exact:
        if players > 12:
            raise SystemExit("--exact enumerates 2^K subsets: use K ≤ 12")
        from shedkit.value.engine import ProgressBar  # noqa: F401  (bar comes from the loop)

        subsets = [tuple(p for i, p in enumerate(ids) if m >> i & 1) for m in range(1 << players)]
        done = 0
        for chunk_start in range(0, len(subsets), 16):
            utility.evaluate_many(subsets[chunk_start : chunk_start + 16])
            done = min(len(subsets), chunk_start + 16)
            print(f"  pool: {done}/{len(subsets)} subsets, {time.monotonic() - start:.0f}s "
                  f"({utility.computed} computed)", flush=True)
        reference = np.array([exact_shapley(utility, ids)[p] for p in ids])
        ref_text = "exact Shapley (all 2^K subsets)"
        split_half = 1.0
    elif args.fill_cache:  # fill the cache with the table's fine-tunes; the reference comes later
        reference, split_half, ref_text = np.zeros(players), float("nan"), "none (--fill-cache: Spearman meaningless)"
    else:
        reference, split_half, done = real_reference(utility, args, info)
        ref_text = f"antithetic, {done} permutations"
        if args.reference_only:
            return {"label": f"reference only: {ref_text}, split-half Spearman {split_half:.4f}",
                    "players": players, "reference_split_half": split_half, "reference": reference.tolist(),
                    "real": info}
    seconds = time.monotonic() - start
    info.update(pool_seconds=seconds, computed=utility.computed, compute_seconds=utility.compute_seconds,
                seconds_per_fine_tune=utility.compute_seconds / max(1, utility.computed))
    label = (f"SmolLM2-135M, K={players} proxies of noisy-mix-v1 ({', '.join(info['proxy_labels'])}), "
             f"{args.dev_rows} Alpaca dev rows, max_length {args.max_length}, 1 LoRA epoch: "
             f"reference = {ref_text}, split-half Spearman {split_half:.4f}; "
             f"{utility.computed} fine-tunes computed in {seconds:.0f}s")
    surrogate = None
    if args.first_order:
        surrogate, info["first_order"] = first_order_surrogate(utility, args)
    table = run_table(utility, ids, reference, args, label, surrogate)
    table.update(reference_split_half=split_half, reference=reference.tolist(), real=info)
    return table


def machine() -> dict:
    """The bench's machine record (CPU model, fast bf16, cores, torch threads, load) and the git
    commit: ``shedkit.evaluate.bench.machine`` + ``shedkit.report.manifest.git_hash``."""
    from shedkit.evaluate.bench import machine as bench_machine
    from shedkit.report.manifest import git_hash

    return {**bench_machine(), "git": git_hash()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, nargs="+", default=[30, 60], help="K proxies")
    parser.add_argument("--seeds", type=int, default=3, help="estimator seeds per configuration")
    parser.add_argument("--target", type=float, default=0.9, help="Spearman to reach")
    parser.add_argument("--paper-k", type=int, default=3, help="SHED's k for the paper-like setting")
    parser.add_argument("--budget-per-player", type=float, default=40,
                        help="evaluation budget per run, as a multiple of K")
    parser.add_argument("--reference-permutations", type=int, default=4000)
    parser.add_argument("--max-permutations", type=int, default=400,
                        help="cap per run in permutations (a finite pool of subsets never fills the budget)")
    parser.add_argument("--noise", type=float, default=0.02, help="game: per-subset score noise")
    parser.add_argument("--game-seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only the estimators whose name contains one of these")
    parser.add_argument("--real", action="store_true", help="SmolLM2 fine-tunes instead of the game")
    parser.add_argument("--exact", action="store_true", help="real: evaluate all 2^K subsets (reference = exact)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/bench/noisy-mix-v1"))
    parser.add_argument("--proxy-seed", type=int, default=0)
    parser.add_argument("--dev-rows", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--lr", type=float, default=None, help="real: the fine-tunes' learning rate (default TrainConfig's)")
    parser.add_argument("--reference-seconds", type=float, default=None,
                        help="real: stop the reference after this long (it resumes from the cache next time)")
    parser.add_argument("--reference-only", action="store_true",
                        help="real: build (or extend) the reference only, no estimator table")
    parser.add_argument("--fill-cache", action="store_true",
                        help="real: run the table's estimators against no reference, only to cache their fine-tunes "
                             "(a later run with the reference then recomputes the table from the cache)")
    parser.add_argument("--first-order", action="store_true",
                        help="real: add the control variate with first-order proxy values as its surrogate")
    parser.add_argument("--fixed-loop-seeds", type=int, default=None,
                        help="seeds for SHED's fixed T=10 loop (default --seeds; 0 skips it)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/shedkit/bench-estimators")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-estimators"))
    args = parser.parse_args(argv)
    start = time.monotonic()
    env = machine()
    print(f"machine: {env}")
    results = [(bench_real if args.real else bench_game)(k, args) for k in args.players]
    env["load_after"] = machine()["load_average"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("figures-real" + ("-fill" if args.fill_cache else "") if args.real else "figures-game")
    path = path.with_name(path.name + ("-only-" + "-".join(args.only) if args.only else "") + ".json")
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": env,
                                "results": results, "seconds": time.monotonic() - start}, default=float))
    print(f"\n{time.monotonic() - start:.0f}s; figures in {path}")


if __name__ == "__main__":
    main()
