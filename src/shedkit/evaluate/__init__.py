"""Fine-tune on a subset, evaluate on held-out tasks, benchmark selection methods.

Built on the model layer (``shedkit.models``: one fine-tune loop, one scorer); nothing here
trains or scores by itself. Importing this package is cheap (torch loads on first use).

    finetune_subset(subset, model, out, config, seed, merged=False)   -> train stats (dict)
    load_task(path) / load_tasks(paths)                                -> Task (loss or MC rows; MMLU CSVs)
    evaluate_model(model, tasks, out=None, harness="shedkit")          -> metrics document
    Bench(suite, out, BenchConfig(...)).run() / run_bench(...)         -> results document
    BENCH_RECIPE, QUICK_RECIPE, RECIPE_SEED                            -> the benchmark's fixed recipe
"""

from __future__ import annotations

from shedkit.util.registry import lazy_attributes

_LAZY = {
    "BENCH_RECIPE": "recipe", "QUICK_RECIPE": "recipe", "RECIPE_SEED": "recipe",
    "finetune_subset": "recipe", "finetune_records": "recipe", "read_train_stats": "recipe",
    "Task": "tasks", "load_task": "tasks", "load_tasks": "tasks", "read_mmlu_csv": "tasks", "mmlu_prompt": "tasks",
    "evaluate_model": "harness", "score_task": "harness",
    "lm_eval_scores": "lm_eval_adapter",
    "Suite": "suite",
    "Bench": "bench", "BenchConfig": "bench", "run_bench": "bench",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
