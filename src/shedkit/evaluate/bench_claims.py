"""What a bench's results say: the papers' claims put to the test, the plan's missing cells,
the calibration check and the compute-vs-quality plot (all from results.json alone).

Every comparison is on one test loss (lower is better), mean over seeds: the suite's mixed
target where it has one (``mixed_test``, derived by the bench), else the Alpaca test loss
(``alpaca_test``); issue 22's questions about the recommended row ``auto`` come first. "Noise" is the larger sample sd of the two rows compared; a row with one seed borrows
``random``'s sd (said so in the table). A claim "holds" when the difference is in its
direction by more than 2 × noise, "does not hold" when it is the other way by more than that,
and "within noise" otherwise; "not measured" when a row is missing; "provisional" when a
stochastic row has fewer than 3 seeds (its sd, or the borrowed one, is then a rough guess).
This rule asks for run-to-run separation, stricter than a test on the means; beside it the text
gives Welch's t-test on the per-seed losses (two-sided p) where both rows have >= 2 seeds that
differ, the figure a reader used to t-tests on means expects (more seeds shrink it, not the sd).
"""

from __future__ import annotations

from typing import Any

from shedkit.evaluate.bench_rows import TABLE_ROWS

LOSS_TASK = "alpaca_test"
MIXED_TASK = "mixed_test"  # a suite's derived mixed target (evaluate.bench.with_mixed)
PLANNED_SEEDS = 3
# the questions: does shedkit's best selection beat random, the best plain filter, the full pool?
SHEDKIT_ROWS = ("shed-qocs", "shed-qwcs", "shed-hybrid", "shed-hybrid-filter", "lobass", "first-order", "first-order-less", "first-order-less-z", "shed-hybrid-less")
PLAIN_FILTER_ROWS = ("lowest-loss", "ifd", "filtered-random")
SHED_ROWS = ("shed-qwcs", "shed-qocs", "shed-hybrid", "shed-hybrid-filter", "shed-hybrid-less")


def primary_task(doc: dict[str, Any]) -> str:
    """The test target the claims are judged on: the suite's mixed target where it has one
    (``mixed_test``, noisy-mix-v2), else the Alpaca test loss (noisy-mix-v1)."""
    return MIXED_TASK if MIXED_TASK in (doc.get("tasks") or {}) else LOSS_TASK


def _stat(summary: dict[str, Any], row: str, task: str, metric: str) -> dict[str, Any] | None:
    stat = (summary.get(row) or {}).get("tasks", {}).get(task, {}).get(metric)
    return stat if stat and stat.get("mean") is not None else None


def _loss(summary: dict[str, Any], row: str, task: str = LOSS_TASK) -> dict[str, Any] | None:
    stat = (summary.get(row) or {}).get("tasks", {}).get(task, {}).get("loss")
    return stat if stat and stat.get("mean") is not None else None


def _noise(summary, *stats, task: str = LOSS_TASK, metric: str = "loss") -> tuple[float | None, str]:
    sds = [s["sd"] for s in stats if s.get("sd") is not None]
    if len(sds) == len(stats):
        return max(sds), ""
    ref = _stat(summary, "random", task, metric)
    if ref and ref.get("sd") is not None:
        return max(sds + [ref["sd"]]), " (a single-seed row: random's sd used as noise)"
    return None, " (single seeds: no noise estimate)"


def compare(summary: dict[str, Any], better: str, worse: str, *, tie_ok: bool = False, task: str = LOSS_TASK,
            metric: str = "loss") -> tuple[str, str]:
    """(our measurement, holds?) for "``better`` is better than ``worse`` on ``task``" (a lower
    loss; a higher ``acc``/``acc_norm``); with ``tie_ok`` ("matches or beats") a difference
    within noise counts as holding."""
    a, b = _stat(summary, better, task, metric), _stat(summary, worse, task, metric)
    if a is None or b is None:
        missing = [r for r, s in ((better, a), (worse, b)) if s is None]
        return f"{', '.join(missing)}: not measured", "not measured"
    noise, note = _noise(summary, a, b, task=task, metric=metric)
    diff = (a["mean"] - b["mean"]) * (1 if metric == "loss" else -1)  # < 0: better is better
    text = f"{better} {_fmt(a)} vs {worse} {_fmt(b)}: Δ{'' if metric == 'loss' else ' ' + metric} = {a['mean'] - b['mean']:+.4f}" + (f" ({abs(diff) / noise:.1f} × noise)" if noise else "") + note
    p = welch_p(a, b)
    if p is not None:
        text += f"; Welch p = {p:.2g}"
    if noise is None:
        verdict = "yes (no error bar)" if diff < 0 or (tie_ok and diff == 0) else "no (no error bar)"
    elif diff < -2 * noise:
        verdict = "yes"
    elif diff > 2 * noise:
        verdict = "no"
    else:
        verdict = "yes (within noise)" if tie_ok else "within noise"
    if noise is not None:
        thin = [r for r, st in ((better, a), (worse, b)) if st["n"] < PLANNED_SEEDS and not _single_run_row(summary, r)]
        if thin:
            verdict += f" — provisional: {', '.join(thin)} under {PLANNED_SEEDS} seeds"
    return text, verdict


def welch_p(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Two-sided p of Welch's t-test on two rows' means from their (mean, sd, n); None where a row
    has under 2 seeds or both sds are 0 (equal runs: a deterministic selection, no spread)."""
    if a["n"] < 2 or b["n"] < 2 or a.get("sd") is None or b.get("sd") is None or (a["sd"] == 0 and b["sd"] == 0):
        return None
    from scipy.stats import ttest_ind_from_stats

    return float(ttest_ind_from_stats(a["mean"], a["sd"], a["n"], b["mean"], b["sd"], b["n"], equal_var=False).pvalue)


def _single_run_row(summary: dict[str, Any], row: str) -> bool:
    """A deterministic row (full; dsir top-k) runs once by design: one run is all it has."""
    return bool((summary.get(row) or {}).get("deterministic"))


def _fmt(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.4f}" + (f" ± {stat['sd']:.4f} (n={stat['n']})" if stat.get("sd") is not None else f" (n={stat['n']})")


def best_of(summary: dict[str, Any], rows, task: str = LOSS_TASK) -> str | None:
    present = [(r, _loss(summary, r, task)) for r in rows]
    present = [(r, s) for r, s in present if s is not None]
    return min(present, key=lambda rs: rs[1]["mean"])[0] if present else None


# what a transfer row's recipe may change besides its method: full fine-tuning needs a lower lr
TRANSFER_FREE_FIELDS = ("method", "lr")


def transfer_losses(doc: dict[str, Any]) -> tuple[dict[str, float], dict[str, float], Any]:
    """``(lora, full, other_lr)``: mean Alpaca test loss per row under each recipe kind. This
    run's kind is its own table (its summary: this recipe, every seed it reports; ``full`` left
    out, it trains longer); the other kind comes from the cells evaluated like this run (same pool,
    test rows and scoring) whose recipe is this run's but for method and lr (with several lrs, the
    one with the most rows). Cells of other recipes (an earlier calibration, say) never mix in."""
    import numpy as np

    summary, own = doc["summary"], (doc.get("settings") or {}).get("recipe") or {"method": "lora"}
    mine = {r: _loss(summary, r)["mean"] for r in summary if r != "full" and _loss(summary, r) is not None}
    fixed = {k: v for k, v in own.items() if k not in TRANSFER_FREE_FIELDS}
    by_lr: dict[Any, dict[str, list[float]]] = {}
    for cell in (doc.get("cells") or {}).values():
        recipe = cell.get("recipe") or {}
        same_eval = (cell.get("eval_keys") or {}).get(LOSS_TASK) == (doc.get("eval_keys") or {}).get(LOSS_TASK)
        if (cell.get("row") in ("base", "full") or cell.get("pool") != doc.get("pool_key") or not same_eval
                or recipe.get("method") == own["method"] or any(recipe.get(k) != v for k, v in fixed.items())):
            continue
        loss = cell.get("eval", {}).get(LOSS_TASK, {}).get("loss")
        if loss is not None:
            by_lr.setdefault(recipe.get("lr"), {}).setdefault(cell["row"], []).append(float(loss))
    lr, rows = max(by_lr.items(), key=lambda kv: len(kv[1]), default=(None, {}))
    other = {row: float(np.mean(v)) for row, v in rows.items()}
    lora, full = (mine, other) if own["method"] == "lora" else (other, mine)
    return lora, full, lr


def transfer_claim(doc: dict[str, Any]) -> tuple[str, str]:
    """Rows ranked by test loss with the LoRA recipe and with the full-fine-tuning recipe."""
    lora, full, lr = transfer_losses(doc)
    common = [r for r in lora if r in full]
    if len(common) < 3:
        return (f"full-fine-tuning recipe evaluated for {len(common)} row(s) ({', '.join(common) or 'none'}); at least 3 are needed",
                "not measured")
    from scipy.stats import kendalltau

    order_lora = sorted(common, key=lora.get)
    order_full = sorted(common, key=full.get)
    tau = float(kendalltau([lora[r] for r in common], [full[r] for r in common]).statistic)
    text = (f"LoRA order {' < '.join(order_lora)}; full-FT order {' < '.join(order_full)}"
            + (f" (lr {lr:g})" if isinstance(lr, (int, float)) else "") + f"; Kendall τ = {tau:.2f}")
    return text, "yes" if order_lora == order_full else ("partly" if tau > 0 else "no")


def claims(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(claim, source, our measurement, holds?)`` rows, judged on ``primary_task(doc)``."""
    s, task = doc["summary"], primary_task(doc)
    shed = best_of(s, SHED_ROWS, task) or "shed-qwcs"
    ours = best_of(s, SHEDKIT_ROWS, task) or "shed-qwcs"
    plain = best_of(s, PLAIN_FILTER_ROWS, task) or "lowest-loss"
    picked = " (the best of the rows measured, picked on this same test loss: optimistic)"
    out = recommended_claims(doc, task)
    text, verdict = compare(s, "clean-random", "random", task=task)
    out.append(("calibration: clean-random beats random by > 2 sd", "this bench (issue 13)", text, verdict))
    text, verdict = compare(s, ours, "random", task=task)
    out.append(("shedkit's best selection beats a random subset of the same size", "this bench (issue 13)",
                text + picked, verdict))
    text, verdict = compare(s, ours, plain, task=task)
    out.append(("shedkit's best selection beats the best plain filter (" + ", ".join(PLAIN_FILTER_ROWS) + ")",
                "this bench (issue 13)", text + picked, verdict))
    text, verdict = compare(s, shed, "full", tie_ok=True, task=task)
    out.append(("SHED: 10% of the data matches or beats the full data", "He et al. 2024, SHED (arXiv 2405.00705)", text, verdict))
    text, verdict = compare(s, "lobass@0.06", "full", task=task)
    out.append(("LoBaSS: 6% of the data beats full-data fine-tuning", "Zhou et al. 2023, LoBaSS (arXiv 2310.13008)", text, verdict))
    text, verdict = compare(s, "shed-qwcs", "shed-qocs", task=task)
    out.append(("SHED: QWCS beats QOCS", "He et al. 2024, SHED (arXiv 2405.00705)", text, verdict))
    text, verdict = transfer_claim(doc)
    out.append(("transferability: the ordering chosen with LoRA proxies survives full fine-tuning",
                "He et al. 2024, SHED (arXiv 2405.00705)", text, verdict))
    return out


RECOMMENDED = "auto"
SOURCE_22 = "issue 22 (pre-registered)"


def recommended_claims(doc: dict[str, Any], task: str) -> list[tuple[str, str, str, str]]:
    """Issue 22's questions for the recommended row ``auto`` (none when the table has no such
    row): does it beat random and filtered-random on ``task`` by > 2 sd, is it worse than random
    by > 2 sd on no single target, and how much of its gain does ``mix-random`` (random rows with
    its source mix) explain."""
    s = doc["summary"]
    if RECOMMENDED not in s:
        return []
    from shedkit.pipeline.methods.auto import preset_for

    preset = preset_for(RECOMMENDED)
    out = []
    text, verdict = compare(s, RECOMMENDED, "random", task=task)
    out.append((f"the recommended method (auto = {preset.name}) beats random on {task} by > 2 sd", SOURCE_22, text, verdict))
    for name in (r for r in ("filtered-random",) if r in s):
        text, verdict = compare(s, RECOMMENDED, name, task=task)
        if preset.method == name and _values(s, RECOMMENDED, task) == _values(s, name, task):
            text += f" ({preset.name} is {name} with {preset.settings}: the same selections seed for seed, so this comparison is empty)"
            verdict = "same row"
        out.append((f"the recommended method beats {name} on {task} by > 2 sd", SOURCE_22, text, verdict))
    worse = []
    checked = []
    for name, info in (doc.get("tasks") or {}).items():
        if name == task or info.get("derived_from"):
            continue
        metric = "loss" if info.get("kind") == "records" else "acc"
        text, verdict = compare(s, "random", RECOMMENDED, task=name, metric=metric)  # "random is better"
        if verdict == "not measured":
            continue
        checked.append(name)
        if verdict.startswith("yes"):
            worse.append(f"{name} {metric}: {text}")
    if checked:
        out.append(("the recommended method is worse than random by > 2 sd on no single target", SOURCE_22,
                    ("; ".join(worse) if worse else "no target out of " + ", ".join(checked)),
                    "no" if worse else "yes"))
    out.append(("share of the recommended method's gain over random that its source mix explains (mix-random)",
                SOURCE_22, *mix_share(s, task)))
    return out


def _values(summary: dict[str, Any], row: str, task: str) -> list[float] | None:
    stat = _loss(summary, row, task)
    return None if stat is None else [round(v, 9) for v in stat["values"]]


def mix_share(summary: dict[str, Any], task: str) -> tuple[str, str]:
    """(text, verdict) for (random − mix-random) / (random − auto) on ``task``'s loss."""
    rnd, mix, rec = (_loss(summary, r, task) for r in ("random", "mix-random", RECOMMENDED))
    if rnd is None or mix is None or rec is None:
        return "random, mix-random and auto are needed", "not measured"
    gain, mix_gain = rnd["mean"] - rec["mean"], rnd["mean"] - mix["mean"]
    text = (f"auto's gain over random {gain:+.4f}, mix-random's {mix_gain:+.4f} (mix-random {_fmt(mix)})")
    noise, _ = _noise(summary, rnd, rec, task=task)
    if noise is not None and abs(gain) <= 2 * noise:
        return text + f"; auto's gain is within 2 × noise ({noise:.4f}): no gain to split", "no gain to explain"
    return text + f": the mix explains {mix_gain / gain:.0%} of it", f"{mix_gain / gain:.0%}"


def claims_markdown(doc: dict[str, Any]) -> str:
    lines = ["| claim | source | our measurement | holds? |", "|---|---|---|---|"]
    lines += [f"| {c} | {src} | {m} | {h} |" for c, src, m, h in claims(doc)]
    return "\n".join(lines)


def missing_cells(doc: dict[str, Any], planned=TABLE_ROWS, seeds: int = PLANNED_SEEDS) -> list[str]:
    """What the planned table still lacks: rows without results, rows with fewer than ``seeds``
    seeds (deterministic rows need one), reduced test sets, the full-FT transfer rows."""
    s = doc["summary"]
    out = [f"not yet evaluated: {', '.join(doc['missing_cells'])}"] if doc.get("missing_cells") else []
    for row in planned:
        m = s.get(row)
        want = 1 if row == "full" or (m and m["deterministic"]) else seeds
        if m is None:
            out.append(f"{row}: not run")
        elif m["runs"] < want:
            out.append(f"{row}: {m['runs']} of {want} seeds")
    if doc["settings"].get("limit_test"):
        out.append(f"test sets cut to their first {doc['settings']['limit_test']} rows")
    lora, full, _ = transfer_losses(doc)
    if len([r for r in lora if r in full]) < 3:
        out.append("transferability: no full-fine-tuning-recipe evaluations (rerun with --train-method full)")
    return out


def write_tradeoff_plot(doc: dict[str, Any], path) -> Any:
    """Selection wall time (log x) against the claims' test loss (``primary_task``), one point
    per row (± sd), the full-pool fine-tune's wall time as a vertical line."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shedkit.data.containers import atomic_write_bytes

    task = primary_task(doc)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row, m in doc["summary"].items():
        loss = _loss(doc["summary"], row, task)
        sel = m.get("select_seconds") or {}
        if loss is None or sel.get("mean") is None:
            continue
        x = max(sel["mean"], 1e-3)
        ax.errorbar([x], [loss["mean"]], yerr=[loss["sd"] or 0.0], xerr=[[0.0], [sel.get("sd") or 0.0]],
                    fmt="s" if m.get("reference") else "o", capsize=3, label=row + (" (reference)" if m.get("reference") else ""))
    full = doc["summary"].get("full")
    if full and (full.get("finetune_seconds") or {}).get("mean"):
        ax.axvline(full["finetune_seconds"]["mean"], color="#c44e52", linestyle="--", linewidth=1,
                   label=f"full-pool fine-tune {full['finetune_seconds']['mean'] / 60:.0f} min")
    base = (doc.get("base") or {}).get(task, {}).get("loss")
    if base is not None:
        ax.axhline(base, color="grey", linestyle=":", linewidth=1, label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("selection wall time (s, log)")
    ax.set_ylabel(f"{task} loss (mean ± sd over seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
