"""Score a model on evaluation tasks with the model layer (``shedkit eval``'s engine).

Per task (see ``tasks``): instruction rows -> ``loss`` (token-weighted mean response-token
loss, nats) and ``row_mean_loss``; multiple-choice rows -> ``acc`` and ``acc_norm`` by
log-likelihood (lm-evaluation-harness's definitions; the model layer's ``mc_accuracy``). No
second scorer lives here: every number comes from ``shedkit.models.objectives``.

``metrics.json`` (written atomically) records the model, how it was loaded (its identity),
the scoring settings, per-task metrics and wall time, package versions and git hash.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from shedkit.evaluate.tasks import Task


def score_task(model, tokenizer, task: Task, score_config=None, progress: bool = False) -> dict[str, Any]:
    """Metrics of an in-memory model on one task (``loss``... or ``acc``/``acc_norm``...)."""
    import numpy as np

    from shedkit.models.config import ScoreConfig
    from shedkit.models.objectives import dev_loss, mc_accuracy

    config = score_config or ScoreConfig()
    start = time.perf_counter()
    if task.kind == "records":
        metrics = {"kind": "loss", **dev_loss(model, tokenizer, task.dev.records, config, progress)}
    else:
        res = mc_accuracy(model, tokenizer, task.dev.items, config, progress=progress)
        metrics = {"kind": "mc", "acc": res["acc"], "acc_norm": res["acc_norm"], "n": res["n"]}
        if task.subtasks:
            lls, items, sub, pos = res["loglikelihoods"], task.dev.items, {}, 0
            for name, size in task.subtasks:
                part = range(pos, pos + size)
                acc = [float(np.argmax(lls[i]) == items[i].gold) for i in part]
                norm = [float(np.argmax(np.asarray(lls[i]) / [len(c) for c in items[i].choices]) == items[i].gold) for i in part]
                sub[name] = {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(norm)), "n": size}
                pos += size
            metrics["subtasks"] = sub
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    metrics["source"] = task.source
    return metrics


def evaluate_model(
    model: str | os.PathLike,
    tasks: Sequence[Task],
    out: str | os.PathLike | None = None,
    *,
    score_config=None,
    limit: int | None = None,
    harness: str = "shedkit",
    device: str | None = None,
    progress: bool = True,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Load ``model`` (alias, HF dir or hub id, or a ``shedkit finetune`` directory: adapter or
    merged) and score it on ``tasks`` (each cut to its first ``limit`` rows when given).
    ``harness``: "shedkit" (the model layer) or "lm-eval" (lm-evaluation-harness on the same
    loaded model; multiple-choice tasks only). Writes ``out/metrics.json`` when ``out`` is given.
    Returns the metrics document.
    """
    from shedkit.errors import ShedkitError
    from shedkit.models.config import ScoreConfig
    from shedkit.models.loading import load_model, model_identity

    if harness not in ("shedkit", "lm-eval"):
        from shedkit.util.registry import unknown_name

        raise unknown_name("harness", harness, ("shedkit", "lm-eval"))
    config = score_config or ScoreConfig()
    tasks = [t.head(limit) for t in tasks]
    if harness == "lm-eval":
        from shedkit.evaluate.lm_eval_adapter import require_lm_eval

        require_lm_eval()
    start = time.perf_counter()
    lm, tokenizer = load_model(str(model), device=device)
    load_seconds = time.perf_counter() - start
    results: dict[str, Any] = {}
    if harness == "shedkit":
        for task in tasks:
            results[task.name] = score_task(lm, tokenizer, task, config, progress)
    else:
        from shedkit.evaluate.lm_eval_adapter import lm_eval_scores

        results = lm_eval_scores(lm, tokenizer, tasks, batch_size=config.batch_size, max_length=config.max_length)
    doc = {
        "model": str(model),
        "model_identity": model_identity(str(model)),
        "harness": harness,
        "score_config": config.to_dict(),
        "limit": limit,
        "tasks": results,
        "timings": {"load": round(load_seconds, 3), "total": round(time.perf_counter() - start, 3)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "shedkit_command": command if command is not None else list(sys.argv),
    }
    if out is not None:
        from shedkit.data.containers import atomic_write_json
        from shedkit.report.manifest import environment

        doc["environment"] = environment()
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "metrics.json", doc)
    return doc


def headline(metrics: dict[str, Any]) -> str:
    """One short string per task result: ``loss 1.234`` or ``acc 0.41 / acc_norm 0.45``."""
    if metrics.get("kind") == "loss":
        return f"loss {metrics['loss']:.4f}"
    if metrics.get("kind") == "skipped":
        return "skipped: " + metrics.get("reason", "")
    return f"acc {metrics['acc']:.4f} / acc_norm {metrics['acc_norm']:.4f}"
