"""Run the same loaded model through lm-evaluation-harness on local task files (``--harness lm-eval``).

Needs the ``eval`` extra (``pip install 'shedkit[eval]'``, i.e. lm-eval). Each
multiple-choice task is written to a temporary JSONL of ``{query, choices, gold}`` rows whose
query already carries the context shedkit scores (``mc_context``: "\\nAnswer:" appended to
ARC-style "Question: ..." queries; MMLU queries carry lm-eval's MMLU prompt), and handed to
lm-eval as a task config: ``output_type: multiple_choice``, ``doc_to_text: query``,
``doc_to_choice: choices``, ``doc_to_target: gold``, zero-shot, metrics ``acc``/``acc_norm``.
lm-eval receives the model object shedkit loaded (``HFLM(pretrained=model)``), so aliases,
adapters and merged fine-tunes load exactly as in the shedkit harness.

Instruction (loss) tasks are not run: lm-eval has no response-token-loss metric (its
``loglikelihood_rolling`` scores whole documents); they are reported as skipped.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

from shedkit.evaluate.tasks import Task


def require_lm_eval():
    from shedkit.errors import require

    return require("lm_eval", "eval", "--harness lm-eval")


def _task_config(name: str, path: Path, cache_dir: Path) -> dict[str, Any]:
    return {
        "task": f"shedkit_{name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}, "cache_dir": str(cache_dir)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def lm_eval_scores(model, tokenizer, tasks: Sequence[Task], batch_size: int = 16, max_length: int | None = None) -> dict[str, Any]:
    """``{task name: {kind, acc, acc_norm, n}}`` from lm-evaluation-harness for the MC tasks;
    loss tasks come back as ``{"kind": "skipped", "reason": ...}``."""
    import logging
    import time

    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from shedkit.models.objectives import mc_context

    out: dict[str, Any] = {}
    mc = [t for t in tasks if t.kind == "mc"]
    for t in tasks:
        if t.kind != "mc":
            out[t.name] = {"kind": "skipped", "reason": "lm-eval has no response-token loss; use --harness shedkit", "source": t.source}
    if not mc:
        return out
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:  # lm-eval reads the task files through `datasets`; its per-file bars say nothing here
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
              device=str(next(model.parameters()).device))
    with tempfile.TemporaryDirectory(prefix="shedkit-lm-eval-") as tmp:
        configs = []
        for t in mc:
            path = Path(tmp) / f"{t.name}.jsonl"
            path.write_text("".join(json.dumps({"query": mc_context(i.query), "choices": list(i.choices), "gold": i.gold}) + "\n"
                                    for i in t.dev.items))
            configs.append(_task_config(t.name, path, Path(tmp) / "hf-datasets"))
        start = time.perf_counter()
        res = simple_evaluate(model=lm, tasks=configs, num_fewshot=0, bootstrap_iters=0, log_samples=False,
                              batch_size=batch_size)
        seconds = time.perf_counter() - start
    for t in mc:
        r = res["results"][f"shedkit_{t.name}"]
        out[t.name] = {"kind": "mc", "acc": float(r["acc,none"]), "acc_norm": float(r["acc_norm,none"]),
                       "n": len(t), "seconds": round(seconds / len(mc), 3), "source": t.source,
                       "lm_eval_version": _version()}
    return out


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("lm-eval")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return None
