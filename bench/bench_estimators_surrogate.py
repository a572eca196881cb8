"""The control-variate Shapley estimator with first-order surrogates on the K = 16 real game
(issue 23, item 4): fine-tunes to reach and stay at Spearman ≥ 0.9 against the real-K16
reference, goal ≤ 1/20 of SHED's fixed loop T·K/k.

The game is ``bench_estimators.py --real --players 16 --proxy-seed 8 --dev-rows 8
--max-length 256 --lr 1e-3`` (``real_utility``: SmolLM2-135M, one LoRA epoch on the proxies,
minus the mean loss on the first 8 rows of noisy-mix-v1's Alpaca dev target). Each player is
one proxy row, so a player's surrogate is its row's first-order value (sum = mean over one
representative). Surrogates, all from ONE warm-up LoRA epoch on the 16 proxies (the recipe of
the game and of bench_estimators' earlier ``--first-order`` surrogate), 2 checkpoints, seed 0,
against the same 8 dev rows:

- ``less``: ``FirstOrderValuation(normalize="less")``: Adam-preconditioned, centred (the
  centre is the mean direction of the 16 proxies: fewer rows than ``center_rows``), cosine;
- ``less-uncentred``: the same without the centre (LESS as published; no extra gradient);
- ``raw``: TracIn dot products (bench_estimators' old ``cv (first-order surrogate)``);
- ``cosine``: TracIn cosines.

The values are computed once and kept in ``--surrogates`` (JSON): a rerun reads them.

Estimators: ``ControlVariateShapley`` with each surrogate given, with its default fitted linear
surrogate (the "old" one), and ``StratifiedShapley`` (no surrogate). Their subset sequence
does not depend on the values or on the surrogate (the border strata in a fixed order, then a
seeded stratified sampler), so every variant uses the same subsets per seed: the script first
lists them with a stand-in utility, checks the v(S) cache, and fine-tunes the missing ones only
up to ``--max-fine-tunes`` (default 0: replay only; a run that would need more stops and says
how many).

    PYTHONPATH=src .venv/bin/python bench/bench_estimators_surrogate.py --dry-run
    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        .venv/bin/python bench/bench_estimators_surrogate.py --compute-surrogates
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_estimators as be  # noqa: E402
from shedkit.value import (  # noqa: E402
    ControlVariateShapley,
    MaxEvaluations,
    MaxPermutations,
    StratifiedShapley,
    spearman,
)
from shedkit.value.utility import Utility  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results/estimators/real-K16"
REFERENCES = {"60 permutations": RESULTS / "reference-K16-proxyseed8.json",
              "78 permutations": RESULTS / "reference-78/reference-K16-proxyseed8.json"}
SURROGATE_KINDS = ("less", "less-uncentred", "raw", "cosine")
GOAL = 20  # ≤ T·K/k / 20 fine-tunes


def game_args(cli: argparse.Namespace) -> argparse.Namespace:
    """bench_estimators' arguments for the K = 16 table (see the README's commands)."""
    return argparse.Namespace(
        players=[16], proxy_seed=8, dev_rows=8, max_length=256, lr=1e-3, precision="auto",
        data=str(Path(__file__).resolve().parents[2] / "shared/bench/noisy-mix-v1"),
        cache_dir=cli.cache_dir, paper_k=3)


def load_reference(path: Path, info: dict) -> dict:
    data = json.loads(path.read_text())
    if data["utility"]["proxy_lines"] != info["proxy_lines"]:
        raise SystemExit(f"{path}: its proxies {data['utility']['proxy_lines']} are not this game's {info['proxy_lines']}")
    return {"values": np.array(data["values"]), "permutations": data["permutations"],
            "split_half": data["split_half_spearman"], "settings_hash": data["utility"]["settings_hash"]}


# -- surrogates -------------------------------------------------------------------------------


def compute_surrogates(utility, args) -> dict:
    """First-order values of the 16 proxies (one fit with normalize="less" fills raw and cosine
    too; the uncentred less values come from the same cached statistics)."""
    import torch

    from shedkit.value.first_order import FirstOrderValuation

    inputs = utility.bench_inputs
    proxies, dev, train = inputs["proxies"], inputs["dev"], inputs["train"]
    common = dict(warmup_rows=len(proxies), checkpoints=2, normalize="less", center_rows=256,
                  task_reduce="max", cache_dir=args.fo_cache_dir, seed=0, progress=False)
    t0, cpu0 = time.perf_counter(), time.process_time()
    fo = FirstOrderValuation("smollm2-135m", train, center=True, **common).fit(proxies, dev)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    unc = FirstOrderValuation("smollm2-135m", train, center=False, **common).fit(proxies, dev)
    ids = [p.id for p in proxies]
    columns = {"less": fo.less_, "less-uncentred": unc.less_, "raw": fo.raw_, "cosine": fo.cosine_}
    return {
        "ids": ids, "values": {k: {i: float(v) for i, v in zip(ids, col)} for k, col in columns.items()},
        "response_tokens": {i: float(n) for i, n in zip(ids, fo.n_tokens_)},
        "params": fo.params(), "cache_key": fo.result_.info.get("cache_key"),
        "stats": {k: v for k, v in fo.stats_.items() if k not in ("cache_dir", "less_cache_dir")},
        "seconds": seconds, "cpu_seconds": cpu, "torch_threads": torch.get_num_threads(),
        "load_after": os.getloadavg(), "machine": be.machine(),
        "note": "warm-up: one LoRA epoch on the 16 proxies (TrainConfig of the game), 2 checkpoints, seed 0; "
                "dev: the game's 8 Alpaca dev rows; less centre = mean direction over the 16 proxies",
    }


# -- the subsets every run needs --------------------------------------------------------------


class Recorder(Utility):
    """A stand-in utility that records the subsets asked for (values are arbitrary, finite)."""

    def __init__(self, players):
        super().__init__()
        self.players, self.asked = tuple(players), []

    def evaluate(self, ids):
        self.asked.append(tuple(ids))
        return float(len(ids)) + 1e-3 * (hash(ids) % 997)


class ReplayOnly(Utility):
    """The real cached utility, refusing any subset it has not cached (no fine-tune by accident)."""

    def __init__(self, cached):
        super().__init__()
        self.cached, self.players = cached, cached.players

    def evaluate(self, ids):
        value = self.cached.lookup(self.cached.job(ids))
        if value is None:
            raise RuntimeError(f"subset of {len(ids)} not in the cache (replay only)")
        return value


def stop_rule(budget: int):
    return MaxEvaluations(budget) | MaxPermutations(400)


def needed_subsets(players, budget: int, seeds) -> set:
    needed = set()
    for seed in seeds:
        rec = Recorder(players)
        StratifiedShapley(stop=stop_rule(budget), seed=seed).fit(rec, players)
        needed |= set(rec.asked)
    return needed


# -- the table --------------------------------------------------------------------------------


def variants(surrogates: dict | None) -> dict:
    out = {"stratified (no surrogate)": lambda **kw: StratifiedShapley(**kw),
           "cv (linear surrogate, the old default)": lambda **kw: ControlVariateShapley(**kw)}
    for kind in SURROGATE_KINDS if surrogates else ():
        out[f"cv (first-order {kind})"] = (lambda s: lambda **kw: ControlVariateShapley(surrogate=s, **kw))(
            surrogates["values"][kind])
    return out


def run_table(utility, players, reference, budget: int, seeds, target: float, surrogates) -> dict:
    fixed = {1: be.T_FIXED * len(players), 3: be.T_FIXED * int(np.ceil(len(players) / 3))}
    rows = {}
    for name, make in variants(surrogates).items():
        reach, stay, final, traces = [], [], [], []
        for seed in seeds:
            tracer = be.Trace(reference)
            make(stop=tracer | stop_rule(budget), seed=seed).fit(utility, players)
            reach.append(be.first_reaching(tracer.rows, target))
            stay.append(be.staying(tracer.rows, target))
            final.append(tracer.rows[-1][1])
            traces.append(_per_evaluation(tracer.rows))
        rows[name] = {"evals_to_reach": reach, "evals_to_stay": stay, "rho_at_budget": final,
                      "rho_by_fine_tunes": traces}
    return {"fixed_loop": fixed, "goal_fine_tunes": {k: v / GOAL for k, v in fixed.items()}, "rows": rows}


def diagnostics(utility, players, surrogates, refs) -> dict:
    """From the cached border (∅, full, singletons, leave-one-outs): v(full) − v(∅), how the
    singletons alone rank, and the scale a and intercept b (w = a·s + b) the control variate gives
    each surrogate before any sample (∅ and the full set only) and refitted on the border."""
    from shedkit.value.surrogates import fit_additive

    n = len(players)
    v_empty, v_full = utility.evaluate(()), utility.evaluate(tuple(sorted(players)))
    single = np.array([utility.evaluate((p,)) for p in players])
    loo = np.array([utility.evaluate(tuple(sorted(set(players) - {p}))) for p in players])
    masks = np.vstack([np.zeros(n, bool), np.ones(n, bool), np.eye(n, dtype=bool), ~np.eye(n, dtype=bool)])
    values = np.concatenate([[v_empty, v_full], single, loo])
    max_ref = float(np.abs(next(iter(refs.values()))["values"]).max())
    scale = {}
    total = v_full - v_empty
    for kind in SURROGATE_KINDS:
        s = np.array([surrogates["values"][kind][p] for p in players])
        start = fit_additive(masks[:2], values[:2], v_empty, s, total=total)  # w = a·s + b from ∅ and full only
        after = fit_additive(masks, values, v_empty, s, total=total)  # refitted on the border
        (a0, b0), (a1, b1) = np.polyfit(s, start, 1), np.polyfit(s, after, 1)
        scale[kind] = {"at_start": float(a0), "intercept_at_start": float(b0), "max_w_at_start": float(np.abs(start).max()),
                       "after_border": float(a1), "intercept_after_border": float(b1),
                       "max_w_after_border": float(np.abs(after).max()), "scale_alone_at_start": float(total / s.sum()),
                       "max_abs_reference": max_ref, "singletons_vs_surrogate": spearman(single - v_empty, s)}
    return {"v_empty": v_empty, "v_full": v_full, "v_full_minus_empty": v_full - v_empty,
            "singletons_vs_reference": {name: spearman(single - v_empty, r["values"]) for name, r in refs.items()},
            "leave_one_out_vs_reference": {name: spearman(v_full - loo, r["values"]) for name, r in refs.items()},
            "scale": scale}


def _per_evaluation(rows) -> dict:
    """Spearman after the last fold at each evaluation count (what the estimator holds then)."""
    out = {}
    for evals, rho in rows:
        out[int(evals)] = None if not np.isfinite(rho) else round(float(rho), 4)
    return out


def _span(xs) -> str:
    return be._span(xs)


def markdown(table: dict, budget: int, seeds, target: float) -> str:
    f1, f3 = table["fixed_loop"][1], table["fixed_loop"][3]
    lines = [f"| estimator | fine-tunes to first reach ρ ≥ {target} (median [min–max], {len(seeds)} seeds) "
             f"| ÷ T·K/1 = {f1} | ÷ T·K/3 = {f3} | fine-tunes from which it stays ≥ {target} "
             f"| ρ at budget {budget} (median [min–max]) |", "|---|---|---|---|---|---|"]
    for name, r in table["rows"].items():
        med = float(np.median(r["evals_to_reach"]))
        q1 = f"{med / f1:.3f}" if np.isfinite(med) else "—"
        q3 = f"{med / f3:.3f}" if np.isfinite(med) else "—"
        fin = r["rho_at_budget"]
        lines.append(f"| {name} | {_span(r['evals_to_reach'])} | {q1} | {q3} | {_span(r['evals_to_stay'])} "
                     f"| {np.median(fin):.3f} [{min(fin):.3f}–{max(fin):.3f}] |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("/work/bench-out/est/cache"),
                        help="the game's v(S) cache (bench_estimators' --cache-dir)")
    parser.add_argument("--fo-cache-dir", type=Path, default=Path.home() / ".cache/shedkit/bench-estimators")
    parser.add_argument("--surrogates", type=Path, default=RESULTS / "first-order-surrogates.json",
                        help="the surrogates' values (read if present, else computed with --compute-surrogates)")
    parser.add_argument("--compute-surrogates", action="store_true",
                        help="compute the first-order values if --surrogates does not exist (the heavy step)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the game's identity, list the subsets the runs need and what is cached; no model")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=40, help="fine-tunes per run (the K = 16 table's 2.5 K)")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--max-fine-tunes", type=int, default=0,
                        help="fine-tune at most this many missing subsets (default 0: replay the cache only)")
    parser.add_argument("--out", type=Path, default=RESULTS / "figures-surrogates.json")
    args = parser.parse_args(argv)

    utility, info = be.real_utility(16, game_args(args))
    players = list(utility.players)
    refs = {name: load_reference(path, info) for name, path in REFERENCES.items() if path.exists()}
    print(f"game: proxies (pool lines) {info['proxy_lines']}, labels {info['proxy_labels']}")
    print(f"v(S) cache: {args.cache_dir}/{info['settings_hash']} (this process's settings hash); "
          f"the references were computed under {sorted({r['settings_hash'] for r in refs.values()})}")
    for name, r in refs.items():
        print(f"reference {name}: split-half {r['split_half']:.3f}, Σφ = v(full) − v(∅) = {r['values'].sum():+.5f}")

    seeds = list(range(args.seeds))
    needed = needed_subsets(players, args.budget, seeds)
    missing = [s for s in needed if utility.lookup(utility.job(s)) is None]
    sizes = np.array([len(s) for s in missing]) if missing else np.zeros(0)
    print(f"subsets the runs need (budget {args.budget}, seeds {seeds}): {len(needed)}; not cached: {len(missing)} "
          f"(sizes: mean {sizes.mean() if len(sizes) else 0:.1f}, {int((sizes <= 1).sum())} of ≤ 1 row)")

    surrogates = json.loads(args.surrogates.read_text()) if args.surrogates.exists() else None
    if args.dry_run:
        print(f"surrogates: {'cached in ' + str(args.surrogates) if surrogates else 'not computed yet'}; "
              f"computing them = one warm-up LoRA epoch on 16 rows (2 steps of 8), then per checkpoint (2) one "
              f"forward+backward per proxy (16), per dev row (8) and a centre pass over the 16 proxies")
        return
    if surrogates is None:
        if not args.compute_surrogates:
            raise SystemExit(f"{args.surrogates} does not exist: pass --compute-surrogates (the heavy step)")
        surrogates = compute_surrogates(utility, args)
        args.surrogates.parent.mkdir(parents=True, exist_ok=True)
        args.surrogates.write_text(json.dumps(surrogates, indent=1, default=float))
        print(f"surrogates computed in {surrogates['seconds']:.0f}s ({surrogates['cpu_seconds']:.0f} CPU s, "
              f"{surrogates['torch_threads']} torch thread(s)); {args.surrogates}")

    out = {"game": info, "references": {n: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}
                                        for n, r in refs.items()},
           "surrogate_file": str(args.surrogates), "surrogate_alone": {}, "surrogate_scale_at_start": {},
           "args": {k: str(v) for k, v in vars(args).items()}, "machine": be.machine()}
    tokens = np.array([surrogates["response_tokens"][p] for p in players])
    print("\nEach surrogate alone (0 fine-tunes): Spearman with the reference; its sign as the control "
          "variate's scale before any sample (v(full) − v(∅) = Σ reference, over Σ surrogate); Spearman with response tokens")
    for kind in SURROGATE_KINDS:
        s = np.array([surrogates["values"][kind][p] for p in players])
        alone = {name: spearman(s, r["values"]) for name, r in refs.items()}
        total = next(iter(refs.values()))["values"].sum()
        scale_sign = float(np.sign(total / s.sum())) if s.sum() != 0 else 0.0
        out["surrogate_alone"][kind] = {**alone, "length": spearman(s, tokens)}
        out["surrogate_scale_at_start"][kind] = {"sum": float(s.sum()), "sign": scale_sign,
                                                  "start_spearman": {n: scale_sign * a for n, a in alone.items()}}
        print(f"  {kind:15s} " + ", ".join(f"ρ vs ref {n}: {a:+.3f}" for n, a in alone.items())
              + f"; Σ = {s.sum():+.4g} → scale sign {scale_sign:+.0f}; ρ with tokens {spearman(s, tokens):+.3f}")

    if missing:
        if len(missing) > args.max_fine_tunes:
            print(f"\nNOT RUN: the estimators need {len(missing)} subsets that the v(S) cache lacks "
                  f"(--max-fine-tunes {args.max_fine_tunes}).")
            out["not_run"] = {"missing_subsets": len(missing), "needed": len(needed)}
            args.out.write_text(json.dumps(out, indent=1, default=float))
            print(f"figures (surrogates only) in {args.out}")
            return
        t0 = time.monotonic()
        for i, subset in enumerate(sorted(missing, key=len)):
            utility(subset)
            print(f"  fine-tune {i + 1}/{len(missing)} (|S| = {len(subset)}), {time.monotonic() - t0:.0f}s", flush=True)
        out["fine_tuned"] = {"count": len(missing), "seconds": time.monotonic() - t0,
                             "settings_hash": info["settings_hash"], "load_after": os.getloadavg()}

    replay = ReplayOnly(utility)
    out["diagnostics"] = diagnostics(replay, players, surrogates, refs)
    print(f"\nrecomputed game: v(full) − v(∅) = {out['diagnostics']['v_full_minus_empty']:+.5f} (the references' Σφ: "
          f"{next(iter(refs.values()))['values'].sum():+.5f}); v({{i}}) − v(∅) alone: Spearman "
          + ", ".join(f"{n} {v:.3f}" for n, v in out["diagnostics"]["singletons_vs_reference"].items()))
    for kind, d in out["diagnostics"]["scale"].items():
        print(f"  cv given {kind:15s}: w = a·s + b with a {d['at_start']:.3g}, b {d['intercept_at_start']:+.3g} before any "
              f"sample (max |w| {d['max_w_at_start']:.3g}; a scale alone would be {d['scale_alone_at_start']:.3g}), "
              f"a {d['after_border']:.3g}, b {d['intercept_after_border']:+.3g} after the border (max |w| "
              f"{d['max_w_after_border']:.3g}); max |φ_ref| {d['max_abs_reference']:.3g}")
    out["tables"] = {}
    for name, r in refs.items():
        table = run_table(replay, players, r["values"], args.budget, seeds, args.target, surrogates)
        out["tables"][name] = table
        f1, f3 = table["fixed_loop"][1], table["fixed_loop"][3]
        print(f"\n### reference: antithetic, {name} (split-half {r['split_half']:.3f}); goal ≤ {f1 / GOAL:.0f} "
              f"(k = 1) / ≤ {f3 / GOAL:.0f} (k = 3) fine-tunes\n")
        print(markdown(table, args.budget, seeds, args.target))
    args.out.write_text(json.dumps(out, indent=1, default=float))
    print(f"\nfigures in {args.out}")


if __name__ == "__main__":
    main()
