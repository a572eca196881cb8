"""results.md and results.png of ``shedkit bench`` (from the results.json document alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shedkit.evaluate.bench_claims import claims_markdown, missing_cells, primary_task, write_tradeoff_plot  # noqa: F401 (re-exported)

CORRUPTIONS = ("misaligned", "truncated", "boilerplate", "wrong_answer")


def _pm(stat: dict[str, Any] | None, fmt: str = "{:.3f}", scale: float = 1.0, suffix: str = "") -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    text = fmt.format(stat["mean"] * scale)
    if stat.get("sd") is not None:
        text += " ± " + fmt.format(stat["sd"] * scale)
    return text + suffix


def _metric_columns(doc: dict[str, Any]) -> list[tuple[str, str]]:
    cols = []
    for name, info in doc["tasks"].items():
        if info["kind"] == "records":
            cols.append((name, "loss"))
        else:
            cols += [(name, "acc"), (name, "acc_norm")]
    return cols


def results_markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    summary = doc["summary"]
    recipe = s["recipe"]
    cols = _metric_columns(doc)
    kinds = sorted({k for m in summary.values() for k in m["labels"]} - {"clean", "corrupted"},
                   key=lambda k: (CORRUPTIONS.index(k) if k in CORRUPTIONS else 99, k))
    sources = sorted({k for m in summary.values() for k in m["sources"]})
    task = primary_task(doc)
    parts = doc["tasks"].get(task, {}).get("derived_from")
    derived = f"; the equal-weight mean of {', '.join(parts)}" if parts else ""
    lines = [f"# shedkit bench: {Path(doc['suite']).name}", ""]
    missing = missing_cells(doc)
    if missing:
        lines += ["**INCOMPLETE** — the planned table (every row, 3 seeds per stochastic row, full test sets,"
                  " the full-fine-tuning transfer rows) still lacks: " + "; ".join(missing) + ".", ""]
    lines += [f"Command: `{' '.join(doc['shedkit_command'])}`", ""]
    mach = doc["machine"]
    during = mach.get("load_during")
    lines += [f"Machine: {mach.get('cpu_model') or mach['processor']}, {mach['cpus']} CPU cores, fast bf16 (AMX/AVX512-BF16) "
              f"{'yes' if mach.get('fast_bf16') else 'no'}, torch threads {mach['torch_threads']}"
              + (f", GPU {mach['cuda']}" if mach.get("cuda") else ", no GPU")
              + (f"; load average (1 min) at the stages behind these results {during['min']}–{during['max']} (mean {during['mean']},"
                 f" {during['samples']} samples){' — timings under load' if during['max'] > (mach['cpus'] or 1) else ''}" if during else "")
              + (f"; at the end {mach['load_average']}" if mach.get("load_average") else "")
              + f"; {mach['platform']}; git {doc['environment'].get('git')}; {doc['created']}; wall time {doc['wall_seconds'] / 60:.1f} min.", ""]
    pool = doc["pool"]
    lines += [
        f"Pool: {pool['records']} rows ({pool['path']}"
        + (f", first {pool['pool_limit']} rows" if pool.get("pool_limit") else "")
        + (f"; {len(pool['skipped_empty'])} row(s) with an empty response left out: lines {pool['skipped_empty']}" if pool["skipped_empty"] else "")
        + f"). Budget {s['budget']}; seeds 0..{s['seeds'] - 1}"
        + "".join(f", {m}: seeds 0..{n - 1}" for m, n in (s.get("method_seeds") or {}).items())
        + f"; model {s['model']}.",
        "",
        f"Fine-tune recipe (every subset, seed {s['recipe_seed']}): {recipe['method']}"
        + (f" r={recipe['lora_r']} alpha={recipe['lora_alpha']:g} dropout={recipe['lora_dropout']:g} on {recipe['target_modules']}" if recipe["method"] == "lora" else "")
        + f", {recipe['epochs']:g} epoch(s), lr {recipe['lr']:g} ({recipe['scheduler']}, warm-up {recipe['warmup_ratio']:g}),"
          f" batch {recipe['batch_size']}×{recipe['grad_accum']}, max_length {recipe['max_length']}, precision {recipe['precision']}."
        + (f" The `full` pool is trained for {s['full_epochs']:g} epoch(s) instead (a fraction of an epoch keeps its cost bounded; it sees"
           f" {s['full_epochs']:g}× the pool's rows once)." if s.get("full_epochs") is not None else ""),
        "",
        "Test targets: " + ", ".join(f"{n} ({t['rows']} rows{', loss' if t['kind'] == 'records' else ', acc/acc_norm'})" for n, t in doc["tasks"].items())
        + (f" — the first {s['limit_test']} rows of each." if s.get("limit_test") else "."),
        "",
    ]
    if doc.get("quick_settings"):
        q = doc["quick_settings"]
        lines += ["`--quick` defaults (flags given on the command line override them; the effective values are"
                  " the ones above and below): " + "; ".join(f"{k} = {v}" for k, v in q.items()) + ".", ""]
    lines += [_method_settings(s), ""]
    det = doc.get("deterministic_methods") or []
    if det:
        lines += [f"Deterministic methods run once, not per seed: {', '.join(det)} (no ± for them).", ""]

    header = ["method", "runs", "corrupted"] + kinds + sources + [f"{t} {m}" for t, m in cols] + ["select s", "fine-tune rows (steps)", "fine-tune s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = doc.get("base") or {}
    if base:
        row = ["base (no fine-tune)", "—", "—"] + ["—"] * (len(kinds) + len(sources))
        for t, m in cols:
            v = base.get(t, {}).get(m)
            row.append("—" if v is None else f"{v:.3f}")
        lines.append("| " + " | ".join(row + ["—", "—", "—"]) + " |")
    for method, m in summary.items():
        runs = "once" if m["deterministic"] else f"{m['runs']} seed" + ("s" if m["runs"] > 1 else "")
        name = f"{method} (reference: reads the labels)" if m.get("reference") else method
        row = [name, runs, _pm(m["labels"].get("corrupted"), "{:.1f}", 100, "%")]
        row += [_pm(m["labels"].get(k), "{:.1f}", 100, "%") for k in kinds]
        row += [_pm(m["sources"].get(k), "{:.0f}", 100, "%") for k in sources]
        row += [_pm(m["tasks"].get(t, {}).get(metric), "{:.3f}") for t, metric in cols]
        row += [_pm(m["select_seconds"], "{:.1f}"), f"{m.get('finetune_rows_trained', '—')} ({m.get('finetune_steps', '—')})",
                _pm(m["finetune_seconds"], "{:.0f}")]
        lines.append("| " + " | ".join(row) + " |")
    full = summary.get("full")
    if full and full.get("finetune_seconds", {}).get("mean") and full.get("finetune_rows_trained"):
        per_row = full["finetune_seconds"]["mean"] / full["finetune_rows_trained"]
        lines += ["", f"Full-pool fine-tune: {full['finetune_seconds']['mean']:.0f} s for {full['finetune_rows_trained']} rows;"
                      f" one epoch of the {full['rows']}-row pool at this rate ≈ {per_row * full['rows'] / 60:.1f} min,"
                      f" against the selection times above."]
    spent = compute_seconds(doc)
    lines += ["", "Compute behind these results (summed over stages, whichever invocation computed them): "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in spent.items()) + "."]
    lines += [
        "",
        "Mean ± sample sd over seeds. Corruption kinds and sources are shares of the selected rows"
        " (pool_labels.jsonl, used only for scoring). Losses are mean response-token losses (nats,"
        " lower is better); acc/acc_norm by log-likelihood as lm-evaluation-harness computes them."
        " `fine-tune rows` counts row presentations (rows × epochs) of the recipe on the subset."
        " `select s` is the method's own selection time (the pool already loaded; methods share the"
        " run's cache, so embeddings are paid by the first method that needs them, and shed-qwcs reuses"
        " shed-qocs's cached proxy fine-tunes for the same seed); `fine-tune s` is the recipe's training"
        " time on the subset, measured in the same run.",
        "",
        f"Stages this run: computed {doc['stages']['computed']}, reused from the cache {doc['stages']['cached']},"
        f" whole cells reused from results.json {doc['stages'].get('cells_reused', 0)}.",
        "",
        "![results](results.png)",
        "",
        "## The claims, checked",
        "",
        f"On the {task} loss (lower is better{derived}), mean over seeds; noise = the larger sd of the two rows;"
        " \"yes\"/\"no\" need a difference beyond 2 × noise (runs apart, not only means); Welch p is the"
        " two-sided t-test on the per-seed losses (means apart), given where both rows have >= 2 differing seeds.",
        "",
        claims_markdown(doc),
        "",
        "## Compute against quality",
        "",
        "![compute vs quality](compute_vs_quality.png)",
        "",
    ]
    return "\n".join(lines)


def _method_settings(s: dict[str, Any]) -> str:
    from shedkit.evaluate.bench_rows import VARIANTS, target_names

    names = [m.partition("@")[0] for m in s["methods"]]
    methods = {VARIANTS.get(n, (n, {}))[0] for n in names}
    parts = []
    if "clean-random" in methods:
        parts.append("clean-random (a reference row, not a method): seeded random rows among those pool_labels.jsonl calls clean")
    if "dsir-per-token" in names:
        parts.append("dsir-per-token: DSIR with the per-token mean log weight (dsir_normalize=true); the dsir row is the faithful sum")
    if any(m.startswith("shed") for m in methods):
        epochs = s.get("shed_epochs") or max(1.0, s["recipe"]["epochs"])
        parts.append("SHED: value = minus the loss on " + " + ".join(f"target_{n}_dev" for n in target_names(s["shed_target"]))
                     + (f" (first {s['shed_dev_limit']} rows)" if s.get("shed_dev_limit") else "")
                     + f", {s.get('shed_clusters') or 'about sqrt(N)'} clusters, {s.get('shed_permutations') or 'default'} permutation(s),"
                       f" removal k={s.get('shed_removal_k') or 1}, proxies fine-tuned {epochs:g} epoch(s) with the recipe's lr/batch/max_length")
    if "lobass" in methods:
        parts.append(f"LoBaSS: reference = the base fine-tuned on the pool for {s.get('lobass_ref_epochs') or 1} epoch(s)")
    if "dsir" in methods:
        parts.append(f"DSIR: {'deterministic top-k' if s['dsir_top_k'] else 'Gumbel-top-k (seeded)'} against the instruction-row dev targets")
    if "dq" in methods:
        parts.append("DQ: default bins and embedder (all-MiniLM-L6-v2)")
    if s.get("method_options"):
        parts.append(f"overrides {s['method_options']}")
    return "Method settings: " + "; ".join(parts) + "." if parts else ""


def compute_seconds(doc: dict[str, Any]) -> dict[str, float]:
    """Seconds spent per stage on the runs in ``doc`` (selection, fine-tune, evaluation incl. the base)."""
    runs = doc["runs"]
    evals = sum(float(m.get("seconds") or 0) for r in runs for m in r["eval"].values())
    evals += sum(float(m.get("seconds") or 0) for m in (doc.get("base") or {}).values())
    return {"selection": sum(float(r["select_seconds"] or 0) for r in runs),
            "fine-tuning": sum(float(r["finetune_seconds"] or 0) for r in runs), "evaluation": evals}


def write_results_md(doc: dict[str, Any], path: str | Path) -> Path:
    from shedkit.data.containers import atomic_write_text

    return atomic_write_text(path, results_markdown(doc))


def write_plot(doc: dict[str, Any], path: str | Path) -> Path:
    """One panel for the corrupted share and one per test metric (mean ± sd per method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shedkit.data.containers import atomic_write_bytes

    summary = doc["summary"]
    methods = list(summary)
    panels = [("corrupted share", [summary[m]["labels"].get("corrupted") for m in methods], None)]
    for t, info in doc["tasks"].items():
        metric = "loss" if info["kind"] == "records" else "acc"  # acc_norm is in the table
        panels.append((f"{t} {metric}", [summary[m]["tasks"].get(t, {}).get(metric) for m in methods],
                       (doc.get("base") or {}).get(t, {}).get(metric)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    x = range(len(methods))
    for ax, (title, stats, base) in zip(axes[0], panels):
        means = [s["mean"] if s and s.get("mean") is not None else float("nan") for s in stats]
        ax.bar(x, means, color="#4c72b0")
        with_sd = [(i, mu, st["sd"]) for i, (mu, st) in enumerate(zip(means, stats)) if st and st.get("sd") is not None]
        if with_sd:
            ax.errorbar([i for i, _, _ in with_sd], [mu for _, mu, _ in with_sd], yerr=[sd for _, _, sd in with_sd],
                        fmt="none", ecolor="black", capsize=3)
        if base is not None:
            ax.axhline(base, color="#c44e52", linestyle="--", linewidth=1, label="base")
            ax.legend(fontsize=7)
        finite = [v for v in means if v == v]
        if finite and "share" not in title:
            lo, hi = min(finite + ([base] if base is not None else [])), max(finite + ([base] if base is not None else []))
            pad = max((hi - lo) * 0.3, 0.02 * max(abs(hi), 1e-3))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(list(x))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
