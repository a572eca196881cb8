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

Every row of the new cells files that the committed table lacks is a new row; ``PATH@NAME`` appends `` (NAME)`` to the rows of
that file, so two runs of one row with other bench settings (noisy-mix-v2: one mixed target, or
one target per task) stay apart: ``cells-less.json@mixed-target v2tasks-a/cells.json@per-task``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = ("random", "clean-random", "mix-random", "auto", "filtered-random", "dsir", "first-order", "shed-hybrid-filter",
        "lowest-loss", "first-order-less", "shed-hybrid-less")
FIRST_ORDER_COLUMNS = ("first_order_less", "first_order_raw", "first_order_cosine")


RECIPE = {"method": "lora", "epochs": 1.0, "lr": 0.001, "max_length": 256}  # the table's recipe (older cells: calibration)


MIXED_PARTS = ("alpaca_test", "lima_test", "gsm8k_test")  # noisy-mix-v2's mixed_test: their equal-weight mean


def with_mixed(cell: dict) -> dict:
    """The cell's evaluations plus ``mixed_test`` where it has every part (as the bench derives it)."""
    evals = dict(cell.get("eval") or {})
    if all(p in evals for p in MIXED_PARTS):
        evals["mixed_test"] = {"loss": sum(evals[p]["loss"] for p in MIXED_PARTS) / len(MIXED_PARTS)}
    return {**cell, "eval": evals}


def per_seed(cells: dict, row: str, task: str) -> dict[int, dict]:
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


def length_bias(cells: dict, rows: list[str], roots: list[Path], task: str) -> list[dict]:
    """Per seed of each new first-order row, from its scores.csv (every pool row's values):
    Spearman of the less (also per task where there are several), raw and cosine values with the
    row's response tokens, and the selection's kinds and sources."""
    import csv

    from scipy.stats import spearmanr

    out = []
    for row in rows:
        for seed, cell in sorted(per_seed(cells, row, task).items()):
            path = next((r / cell["selection"] / "scores.csv" for r in roots if (r / cell["selection"] / "scores.csv").is_file()), None)
            if path is None:
                continue
            with open(path, newline="") as f:
                table = list(csv.DictReader(f))
            tokens = [float(r["response_tokens"]) for r in table]
            entry = {"row": row, "seed": seed, "rows": len(table)}
            columns = [c for c in table[0] if c in FIRST_ORDER_COLUMNS or c.startswith("first_order_less_")]
            for col in columns:
                pairs = [(float(r[col]), t) for r, t in zip(table, tokens) if r[col] not in ("", "nan")]
                entry[f"spearman_{col}_vs_response_tokens"] = float(spearmanr(*zip(*pairs)).correlation)
            entry["selection_kinds"] = cell["composition"]["labels"]
            entry["selection_sources"] = cell["composition"]["sources"]
            out.append(entry)
    return out


def load_new(specs: list[str], committed: dict) -> dict:
    """The new cells, each file's rows renamed ``ROW (NAME)`` where it is given as ``PATH@NAME``;
    cells the committed table holds (a bench run with ``--reuse`` carries them) are left out."""
    cells: dict = {}
    for spec in specs:
        path, _, name = spec.partition("@")
        for key, cell in json.loads(Path(path).read_text())["cells"].items():
            if cell.get("row") == "base" or key in committed:
                continue
            if name:
                cell = {**cell, "row": f"{cell['row']} ({name})"}
            cells[f"{key}@{name}"] = cell
    return cells


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("new", nargs="+", help="cells.json files of the new lanes (PATH or PATH@NAME)")
    p.add_argument("--control", type=Path, help="cells.json of the recomputed random seed 0")
    p.add_argument("--out", type=Path)
    p.add_argument("--roots", type=Path, nargs="*", default=[], help="bench output folders holding the new cells' selections/")
    p.add_argument("--committed", type=Path, default=HERE / "results.json", help="the suite's committed results.json")
    p.add_argument("--task", default="alpaca_test", help="alpaca_test (v1) or mixed_test (v2: mean of alpaca, lima, gsm8k)")
    args = p.parse_args(argv)
    task = args.task
    committed = json.loads(args.committed.read_text())["cells"]
    new = load_new(args.new, committed)
    # a row the committed table has is read from it (a new file may carry a control cell of it)
    new_rows = [r for r in dict.fromkeys(c["row"] for c in new.values()) if not per_seed(committed, r, task)]
    table = {}
    for row in [r for r in ROWS if not r.endswith("-less")] + new_rows:
        source = "new" if row in new_rows else "committed"
        cells = per_seed(new if source == "new" else committed, row, task)
        if not cells:
            continue
        seeds = sorted(cells)
        losses = [cells[s]["eval"][task]["loss"] for s in seeds]
        corrupted = [cells[s]["composition"]["labels"]["corrupted"] for s in seeds]
        sources = sorted({k for s in seeds for k in cells[s]["composition"]["sources"]})
        m, sd = stats(losses)
        table[row] = {"seeds": seeds, "task": task, "losses": losses, "mean": m, "sd": sd,
                      "corrupted_mean": sum(corrupted) / len(corrupted), "corrupted": corrupted,
                      "source_share_mean": {k: sum(cells[s]["composition"]["sources"].get(k, 0.0) for s in seeds) / len(seeds)
                                            for k in sources},
                      "per_task_loss_mean": {t: stats([cells[s]["eval"][t]["loss"] for s in seeds])[0]
                                             for t in cells[seeds[0]]["eval"] if all("loss" in cells[s]["eval"].get(t, {}) for s in seeds)},
                      "select_seconds": [cells[s].get("select_seconds") for s in seeds], "source": source}
    comparisons = []
    for ours in new_rows:
        for ref in ("random", "filtered-random", "first-order"):
            if ours in table and ref in table:
                a, b = table[ours], table[ref]
                noise = max((x for x in (a["sd"], b["sd"]) if not math.isnan(x)), default=float("nan"))
                delta = a["mean"] - b["mean"]
                comparisons.append({"row": ours, "against": ref, "delta": delta, "noise": noise,
                                    "delta_over_noise": delta / noise if noise else float("nan"),
                                    "beats_by_2_sd": delta < -2 * noise,
                                    "welch_p": welch_p(a["losses"], b["losses"])})
    control = None
    if args.control:
        ctl = per_seed(json.loads(args.control.read_text())["cells"], "random", task)
        old = per_seed(committed, "random", task)
        if 0 in ctl and 0 in old:
            control = {"random_s0_recomputed": ctl[0]["eval"][task]["loss"], "random_s0_committed": old[0]["eval"][task]["loss"],
                       "difference": ctl[0]["eval"][task]["loss"] - old[0]["eval"][task]["loss"]}
    print(f"| row | source | seeds | {task} loss (mean ± sd) | corrupted | sources | select s |")
    print("|---|---|---|---|---|---|---|")
    for row, t in table.items():
        sel = [s for s in t["select_seconds"] if s is not None]
        mix = ", ".join(f"{k} {100 * v:.0f}%" for k, v in t["source_share_mean"].items() if v >= 0.005)
        print(f"| {row} | {t['source']} | {len(t['seeds'])} | {t['mean']:.4f} ± {t['sd']:.4f} | "
              f"{100 * t['corrupted_mean']:.1f}% | {mix} | {(sum(sel) / len(sel)) if sel else float('nan'):.0f} |")
    for c in comparisons:
        print(f"{c['row']} vs {c['against']}: Δ = {c['delta']:+.4f} ({c['delta_over_noise']:+.1f} × noise {c['noise']:.4f}); "
              f"Welch p = {c['welch_p']:.3g}; beats by > 2 sd: {c['beats_by_2_sd']}")
    if control:
        print(f"control: random seed 0 recomputed {control['random_s0_recomputed']:.4f} vs committed "
              f"{control['random_s0_committed']:.4f} (Δ {control['difference']:+.4f})")
    fo_rows = [r for r in new_rows if r.startswith("first-order")]
    bias = length_bias(new, fo_rows, args.roots, task) if args.roots else []
    for b in bias:
        k = b["selection_kinds"]
        rho = ", ".join(f"{c.removeprefix('spearman_first_order_').removesuffix('_vs_response_tokens')} {v:+.2f}"
                        for c, v in b.items() if c.startswith("spearman_"))
        print(f"{b['row']} seed {b['seed']}: Spearman with response tokens: {rho}; selection corrupted "
              f"{100 * k['corrupted']:.1f}% (" + ", ".join(f"{n} {100 * k[n]:.1f}%" for n in sorted(k) if n not in ("clean", "corrupted"))
              + "); sources " + ", ".join(f"{n} {100 * v:.0f}%" for n, v in sorted(b["selection_sources"].items())))
    if args.out:
        args.out.write_text(json.dumps({"task": task, "table": table, "comparisons": comparisons, "control": control,
                                        "length_bias": bias}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
