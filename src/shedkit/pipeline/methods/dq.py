"""--method dq: Dataset Quantization (GraphCut bins on embeddings, a uniform draw per bin).

Options read from ``ctx.options`` (None means the default):
``embedder`` ("all-MiniLM-L6-v2"; "hashed-ngrams" needs no model), ``device`` (best available),
``embed_batch_size`` (64), ``bins`` (10), ``dq_mode`` ("auto": exact up to ``dq_exact_max``
rows, blocked up to ``dq_partition_above``, partitioned above), ``dq_exact_max`` (10000),
``dq_partition_above`` (20000), ``dq_partition_size`` (5000), ``progress`` (True).

scores.csv: ``dq_bin`` (the GraphCut bin of each row, 0 = built first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from shedkit.pipeline.methods.base import MethodContext, MethodResult
from shedkit.pipeline.options import CommonOptions, EmbeddingOptions, opt
from shedkit.selectors import dq
from shedkit.util.defaults import DEFAULT_EMBEDDER


@dataclass
class Options(CommonOptions, EmbeddingOptions):
    bins: Optional[int] = opt("DQ: number of GraphCut bins (default 10).")
    dq_mode: Optional[str] = opt("DQ: auto | exact | blocked | partitioned (auto partitions above 20k rows).")
    dq_exact_max: Optional[int] = opt(f"DQ auto mode: exact GraphCut up to this many rows (default {dq.EXACT_MAX}).")
    dq_partition_above: Optional[int] = opt(f"DQ auto mode: k-means partitions above this many rows (default {dq.PARTITION_ABOVE}).")
    dq_partition_size: Optional[int] = opt(f"DQ: rows per k-means partition (default {dq.PARTITION_SIZE}).")


def run(ctx: MethodContext) -> MethodResult:
    from shedkit.embed import embed_records

    progress = bool(ctx.option("progress", True))
    embedder = ctx.option("embedder", DEFAULT_EMBEDDER)
    clock = time.perf_counter()
    embeddings = embed_records(
        ctx.records,
        embedder=embedder,
        cache_dir=ctx.cache_dir,
        device=ctx.option("device"),
        batch_size=int(ctx.option("embed_batch_size", 64)),
        progress=progress,
        include_system=bool(ctx.option("embed_system", False)),
    )
    embed_seconds = time.perf_counter() - clock
    res = dq.dq_select(
        embeddings,
        ctx.budget,
        bins=int(ctx.option("bins", 10)),
        seed=ctx.seed,
        mode=ctx.option("dq_mode", "auto"),
        exact_max=int(ctx.option("dq_exact_max", dq.EXACT_MAX)),
        partition_above=int(ctx.option("dq_partition_above", dq.PARTITION_ABOVE)),
        partition_size=int(ctx.option("dq_partition_size", dq.PARTITION_SIZE)),
        progress=progress,
    )
    info = {"embedder": str(embedder), "embedding_dim": int(embeddings.shape[1]), **res.info}
    return MethodResult(res.selected, {"dq_bin": res.bin_of.tolist()}, info, {"embed": embed_seconds, **res.timings})


def plan(p) -> list:
    """--dry-run: the stages of ``run`` (see ``pipeline/planning.py``)."""
    from shedkit.pipeline.plan_data import embed_stage, graphcut_stage, select_stage

    return [embed_stage(p),
            graphcut_stage(p, int(p.option("bins", 10)), p.option("dq_mode", "auto"),
                           int(p.option("dq_exact_max", dq.EXACT_MAX)),
                           int(p.option("dq_partition_above", dq.PARTITION_ABOVE)),
                           int(p.option("dq_partition_size", dq.PARTITION_SIZE))),
            select_stage(p, "draw the budget uniformly from each bin")]
