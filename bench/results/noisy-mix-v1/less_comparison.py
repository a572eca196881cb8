"""The first-order-less and shed-hybrid-less rows of noisy-mix-v1 (issue 23) beside the committed
rows, from the cells' own per-seed figures.

Why not `bench/run_noisy_mix.sh collect`: the committed cells (results.json here) were evaluated
under the test-set evaluation key of MODEL_LAYER_VERSION 1; since 76d79e4 (bucketed padding, version
2) the key differs, so a collect by today's code lists every committed cell as "not evaluated".
The numbers themselves are comparable up to the bf16 noise of the padding change and the CPU
(the committed rows: Intel Xeon with AMX; the new ones: AMD EPYC, avx512_bf16), which the control
row measures: random seed 0 recomputed by the new rows' code on their machine.

    python3 bench/results/noisy-mix-v1/less_comparison.py NEW_CELLS.json [...] --control CTL_CELLS.json \
        [--out bench/results/noisy-mix-v1/less_comparison.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = ("random", "clean-random", "mix-random", "auto", "filtered-random", "dsir", "first-order", "shed-hybrid-filter",
        "lowest-loss", "first-order-less", "shed-hybrid-less")
TASK = "alpaca_test"


RECIPE = {"method": "lora", "epochs": 1.0, "lr": 0.001, "max_length": 256}  # the table's recipe (older cells: calibration)


MIXED_PARTS = ("alpaca_test", "lima_test", "gsm8k_test")  # noisy-mix-v2's mixed_test: their equal-weight mean


def with_mixed(cell: dict) -> dict:
    """The cell's evaluations plus ``mixed_test`` where it has every part (as the bench derives it)."""
    evals = dict(cell.get("eval") or {})
    if all(p in evals for p in MIXED_PARTS):
        evals["mixed_test"] = {"loss": sum(evals[p]["loss"] for p in MIXED_PARTS) / len(MIXED_PARTS)}
    return {**cell, "eval": evals}


def per_seed(cells: dict, row: str, task: str | None = None) -> dict[int, dict]:
    task = task or TASK
    out = {}
    for cell in cells.values():
        recipe = cell.get("recipe") or {}
        if any(recipe.get(k) != v for k, v in RECIPE.items()):
            continue
        cell = with_mixed(cell)
        if cell.get("row") == row and task in (cell.get("eval") or {}):
            out[int(cell["seed"] if cell["seed"] is not None else -1)] = cell
    return out


def stats(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value (scipy when present, else None)."""
    try:
        from scipy import stats as st
    except ImportError:
        return float("nan")
    return float(st.ttest_ind(a, b, equal_var=False).pvalue)


def length_bias(cells: dict, roots: list[Path]) -> list[dict]:
    """Per first-order-less seed, from its scores.csv (every pool row's values): Spearman of the
    less, raw and cosine values with the row's response tokens, and the selection's kinds."""
    import csv

    from scipy.stats import spearmanr

    out = []
    for seed, cell in sorted(per_seed(cells, "first-order-less").items()):
        path = next((r / cell["selection"] / "scores.csv" for r in roots if (r / cell["selection"] / "scores.csv").is_file()), None)
        if path is None:
            continue
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        tokens = [float(r["response_tokens"]) for r in rows]
        row = {"seed": seed, "rows": len(rows)}
        for col in ("first_order_less", "first_order_raw", "first_order_cosine"):
            pairs = [(float(r[col]), t) for r, t in zip(rows, tokens) if r[col] not in ("", "nan")]
            row[f"spearman_{col}_vs_response_tokens"] = float(spearmanr(*zip(*pairs)).correlation)
        row["selection_kinds"] = cell["composition"]["labels"]
        out.append(row)
    return out


def main(argv=None) -> int:
    global TASK
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("new", nargs="+", type=Path, help="cells.json files of the new lanes")
    p.add_argument("--control", type=Path, help="cells.json of the recomputed random seed 0")
    p.add_argument("--out", type=Path)
    p.add_argument("--roots", type=Path, nargs="*", default=[], help="bench output folders holding the new cells' selections/")
    p.add_argument("--committed", type=Path, default=HERE / "results.json", help="the suite's committed results.json")
    p.add_argument("--task", default="alpaca_test", help="alpaca_test (v1) or mixed_test (v2: mean of alpaca, lima, gsm8k)")
    args = p.parse_args(argv)
    TASK = args.task
    committed = json.loads(args.committed.read_text())["cells"]
    new: dict = {}
    for path in args.new:
        new.update(json.loads(path.read_text())["cells"])
    table = {}
    for row in ROWS:
        cells = per_seed(new if row.endswith("-less") else committed, row)
        if not cells:
            continue
        seeds = sorted(cells)
        losses = [cells[s]["eval"][TASK]["loss"] for s in seeds]
        corrupted = [cells[s]["composition"]["labels"]["corrupted"] for s in seeds]
        alpaca = [cells[s]["composition"]["sources"].get("alpaca", 0.0) for s in seeds]
        m, sd = stats(losses)
        table[row] = {"seeds": seeds, "alpaca_test_loss": losses, "mean": m, "sd": sd,
                      "corrupted_mean": sum(corrupted) / len(corrupted), "corrupted": corrupted,
                      "alpaca_share_mean": sum(alpaca) / len(alpaca),
                      "select_seconds": [cells[s].get("select_seconds") for s in seeds],
                      "source": "new" if row.endswith("-less") else "committed"}
    comparisons = []
    for ours in ("first-order-less", "shed-hybrid-less"):
        for ref in ("random", "filtered-random", "first-order"):
            if ours in table and ref in table:
                a, b = table[ours], table[ref]
                noise = max(x for x in (a["sd"], b["sd"]) if not math.isnan(x))
                delta = a["mean"] - b["mean"]
                comparisons.append({"row": ours, "against": ref, "delta": delta, "noise": noise,
                                    "delta_over_noise": delta / noise if noise else float("nan"),
                                    "beats_by_2_sd": delta < -2 * noise,
                                    "welch_p": welch_p(a["alpaca_test_loss"], b["alpaca_test_loss"])})
    control = None
    if args.control:
        ctl = per_seed(json.loads(args.control.read_text())["cells"], "random")
        old = per_seed(committed, "random")
        if 0 in ctl and 0 in old:
            control = {"random_s0_recomputed": ctl[0]["eval"][TASK]["loss"], "random_s0_committed": old[0]["eval"][TASK]["loss"],
                       "difference": ctl[0]["eval"][TASK]["loss"] - old[0]["eval"][TASK]["loss"]}
    print(f"| row | source | seeds | {TASK} loss (mean ± sd) | corrupted | Alpaca rows | select s |")
    print("|---|---|---|---|---|---|---|")
    for row, t in table.items():
        sel = [s for s in t["select_seconds"] if s is not None]
        print(f"| {row} | {t['source']} | {len(t['seeds'])} | {t['mean']:.4f} ± {t['sd']:.4f} | "
              f"{100 * t['corrupted_mean']:.1f}% | {100 * t['alpaca_share_mean']:.0f}% | "
              f"{(sum(sel) / len(sel)) if sel else float('nan'):.0f} |")
    for c in comparisons:
        print(f"{c['row']} vs {c['against']}: Δ = {c['delta']:+.4f} ({c['delta_over_noise']:+.1f} × noise {c['noise']:.4f}); "
              f"Welch p = {c['welch_p']:.3g}; beats by > 2 sd: {c['beats_by_2_sd']}")
    if control:
        print(f"control: random seed 0 recomputed {control['random_s0_recomputed']:.4f} vs committed "
              f"{control['random_s0_committed']:.4f} (Δ {control['difference']:+.4f})")
    bias = length_bias(new, args.roots) if args.roots else []
    for b in bias:
        k = b["selection_kinds"]
        print(f"seed {b['seed']}: Spearman with response tokens: less {b['spearman_first_order_less_vs_response_tokens']:+.2f}, "
              f"raw {b['spearman_first_order_raw_vs_response_tokens']:+.2f}, cosine {b['spearman_first_order_cosine_vs_response_tokens']:+.2f}; "
              f"selection corrupted {100 * k['corrupted']:.1f}% (" + ", ".join(
                  f"{n} {100 * k[n]:.1f}%" for n in sorted(k) if n not in ("clean", "corrupted")) + ")")
    if args.out:
        args.out.write_text(json.dumps({"table": table, "comparisons": comparisons, "control": control,
                                        "length_bias": bias}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
