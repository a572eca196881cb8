"""Cold selection cost per bench row: what selecting would cost with an empty cache.

`shedkit bench` runs every method against one shared cache, so a row's own `select s` is small
when an earlier row already paid for a stage it needs (the pool's embeddings, SHED's proxy
fine-tunes, the base model's losses, the responses-alone losses of IFD). This script reads the
selection manifests of the given bench output folders, takes each stage's cost from the
selection that computed it (the largest time recorded for it), and adds the stages each row
needs to the row's own residual time (its `select s` less the shared stages it computed
itself; the largest over its selections in results.json's table: a selection resumed from a
cut run records only its resumed part, and a stale selection of an earlier setting does not count):

    row                   stages
    dq                    embed
    lowest-loss           base losses
    ifd, filtered-random  base losses + responses alone
    shed-qocs, shed-qwcs  embed + SHED proxy fine-tunes
    shed-hybrid (loss)    embed + proxies + base losses
    shed-hybrid-filter    embed + proxies + base losses + responses alone
    lobass(@0.06)         base losses + the reference (its fine-tune and its losses over the pool,
                          taken from the table's own selections: its epochs are a bench setting)

It writes cold_costs.json and compute_vs_quality_cold.png (cold selection seconds, log, against
the Alpaca test loss, mean ± sd over seeds; the full pool's fine-tune time as a line) next to
results.json.

    python bench/results/noisy-mix-v1/cold_costs.py /work/bench-out/noisy-mix-v1 /work/bench-out/noisy-mix-v1-b
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NEEDS = {
    "dq": ["embed"],
    "lowest-loss": ["base_losses"],
    "ifd": ["base_losses", "response_alone"],
    "filtered-random": ["base_losses", "response_alone"],
    "shed-qocs": ["embed", "shed_proxies"],
    "shed-qwcs": ["embed", "shed_proxies"],
    "shed-hybrid": ["embed", "shed_proxies", "base_losses"],
    "shed-hybrid-filter": ["embed", "shed_proxies", "base_losses", "response_alone"],
    "lobass": ["base_losses", "lobass_reference"],
    "lobass@0.06": ["base_losses", "lobass_reference"],
}


def stage_costs(manifest: dict) -> dict[str, float]:
    """Seconds this selection spent computing each shared stage (0 where it was cached)."""
    t = manifest.get("method_timings") or {}
    m = manifest.get("method") or {}
    out = {"embed": float(t.get("embed", m.get("clustering_seconds_embed", 0.0)) or 0.0)}
    out["shed_proxies"] = float((m.get("fine_tunes") or {}).get("compute_seconds", 0.0) or 0.0)
    if "base_losses" in t:
        out["base_losses"] = float(t["base_losses"])
    if "response_alone_losses" in t:
        out["response_alone"] = float(t["response_alone_losses"])
    if "row_scores" in t and (m.get("base_losses") or {}).get("computed"):
        alone = (m.get("response_alone") or {}).get("computed")
        out["base_losses" if not alone else "base_plus_alone"] = float(t["row_scores"])
    if "reference" in t:  # LoBaSS: 0 s and no losses where the reference was cached
        out["lobass_reference"] = float(t["reference"]) + float(t.get("ref_losses", 0.0) or 0.0)
    return out


def main(outs: list[str]) -> None:
    results = json.loads((HERE / "results.json").read_text())
    in_table = {Path(str(run.get("selection") or "")).name for run in results["runs"]}
    costs: dict[str, float] = {}
    own: dict[str, float] = {}
    for out in outs:
        for man in Path(out).glob("selections/*/manifest.json"):
            doc = json.loads(man.read_text())
            marker = json.loads((man.parent / "bench_selection.json").read_text())
            stages = stage_costs(doc)
            current = man.parent.name in in_table
            for stage, sec in stages.items():
                if stage != "lobass_reference" or current:  # the others do not depend on a bench setting
                    costs[stage] = max(costs.get(stage, 0.0), sec)
            if not current:
                continue
            row = marker.get("row") or man.parent.name.rsplit("-s", 1)[0]
            residual = max(0.0, float(doc["timings"]["select"]) - sum(stages.values()))
            own[row] = max(own.get(row, residual), residual)
    if "response_alone" not in costs and "base_plus_alone" in costs:
        costs["response_alone"] = costs["base_plus_alone"] - costs.get("base_losses", 0.0)
    summary = results["summary"]
    rows = {}
    for row, s in summary.items():
        needs = NEEDS.get(row, [])
        shared = sum(costs.get(st, 0.0) for st in needs)
        loss = (s.get("tasks", {}).get("alpaca_test") or {}).get("loss") or {}
        rows[row] = {"own_residual_s": own.get(row, 0.0), "shared_stages": needs, "shared_s": shared,
                     "cold_select_s": own.get(row, 0.0) + shared, "loss": loss}
    doc = {"stage_costs_s": costs, "rows": rows, "outs": outs,
           "note": "stage cost = the largest time any selection spent computing it; cold = own residual select s + stages"}
    (HERE / "cold_costs.json").write_text(json.dumps(doc, indent=1))
    plot(rows, summary)
    for row, r in rows.items():
        print(f"{row:22s} cold {r['cold_select_s']:8.1f} s (own {r['own_residual_s']:7.1f} + {', '.join(r['shared_stages']) or '-'})")
    print("stages:", {k: round(v, 1) for k, v in costs.items()})


def plot(rows: dict, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    full_ft = None
    for row, r in rows.items():
        loss = r["loss"]
        if not loss or loss.get("mean") is None:
            continue
        if row == "full":
            full_ft = (summary[row].get("finetune_seconds") or {}).get("mean")
        x = max(r["cold_select_s"], 0.1)
        ax.errorbar(x, loss["mean"], yerr=loss.get("sd") or 0, fmt="o", capsize=3)
        ax.annotate(row, (x, loss["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if full_ft:
        ax.axvline(full_ft, linestyle="--", color="grey")
        ax.text(full_ft, ax.get_ylim()[1], " full-pool fine-tune", va="top", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("cold selection wall time, s (log; stages shared through the cache added back)")
    ax.set_ylabel("Alpaca test loss (lower is better)")
    ax.set_title("noisy-mix-v1, 10% subsets: compute against quality")
    fig.tight_layout()
    fig.savefig(HERE / "compute_vs_quality_cold.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
