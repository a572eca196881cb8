"""``shedkit bench``: select with each method and seed, fine-tune with one fixed recipe, evaluate.

For each method and seed: (1) select ``budget`` rows of the suite's pool using only the pool
and the ``*_dev`` targets (``shedkit.select``; the pool is read with ``skip_empty=True``);
(2) fine-tune the base model on the subset with the fixed recipe (``recipe``); (3) evaluate the
fine-tuned model on every ``*_test`` target (``harness``). The base model is evaluated once
as the reference row. Results: ``results.json``, ``results.md`` and ``results.png``.

Every stage is cached in the output directory and keyed by content, so a rerun, or a rerun
with one more method or seed, computes only what is new:
- ``selections/<method>-<seed|once>-<key>/``  the select run (subset, scores, manifest,
  report) + ``bench_selection.json`` (its completion marker); key = method, seed, budget,
  options (target files by content), pool records;
- ``finetunes/<key>/``  the saved fine-tune + ``train_stats.json``; key = base model identity,
  recipe, recipe seed and the subset's record ids — equal subsets share one fine-tune;
- ``evals/<finetune key>/<task>-<key>.json``  one task's metrics; key = task rows, scoring
  settings, row limit;
- ``cache/``  the methods' shared cache (embeddings, SHED fine-tunes, LoBaSS reference and
  losses) unless ``cache_dir`` is given. The first method that needs embeddings pays for them.

Above the stages, results.json keeps every evaluated (row, seed) *cell* under ``cells``,
keyed by content (the selection's key: method, options, budget, seed, pool; the recipe and its
seed; the base model) with one key per test target (rows, scoring). A run reads the cells of
``out/results.json`` and of the ``reuse`` files (e.g. the committed results.json) and skips a
cell found there with every task it needs, even when the stage folders are gone; the cells
accumulate, so a committed results.json is the table's cache. ``cached_only`` computes nothing.

Rows are spec strings (``shedkit.evaluate.bench_rows``): any registered method,
``METHOD@BUDGET``, the ``dsir-per-token`` variant, and the ``clean-random`` reference row, which
reads the labels and is marked as a reference everywhere. Deterministic methods (``full``;
``dsir`` with ``top_k``) select once, not per seed. Every fine-tune uses the same recipe seed,
so differences between seeds come from the selections.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shedkit.data.containers import atomic_write_json
from shedkit.errors import ShedkitError
from shedkit.evaluate.bench_rows import (MIX_RANDOM_OF, BenchRow, clean_random_positions, default_rows,
                                         mix_random_positions, parse_row, target_names)
from shedkit.evaluate.recipe import BENCH_RECIPE, QUICK_RECIPE, RECIPE_SEED, TRAIN_STATS, finetune_records, rows_trained
from shedkit.evaluate.suite import Suite, composition, read_labels
from shedkit.models.config import MODEL_LAYER_VERSION, ScoreConfig, TrainConfig, stable_hash
from shedkit.util.defaults import DEFAULT_MODEL

SHED_METHODS = ("shed-qocs", "shed-qwcs", "shed-hybrid")  # the bench's SHED setting applies to all three
# score rows with the base model (auto and its presets delegate to filtered-random)
ROW_SCORE_METHODS = ("first-order", "lowest-loss", "ifd", "filtered-random", "auto", "recommended-v1")
BENCH_VERSION = "1"
CELLS_VERSION = "2"
MIXED_TASK = "mixed_test"  # derived: see with_mixed
CELLS_FILE = "cells.json"  # every cell known to the run in progress, rewritten after each computed cell

# --quick: each setting below replaces the default; all are listed in results.md
QUICK = {
    "recipe": "1 epoch, max_length 256 (QUICK_RECIPE)",
    "limit_test": 100,
    "full_epochs": 0.25,
    "shed_clusters": 8,
    "shed_permutations": 2,
    "shed_removal_k": 2,
    "shed_dev_limit": 50,
    "lobass_ref_epochs": 0.25,
}


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = field(default_factory=default_rows)  # row specs (see bench_rows)
    budget: str | float | int = 0.1
    seeds: int = 3
    model: str = DEFAULT_MODEL
    recipe: TrainConfig = BENCH_RECIPE
    recipe_seed: int = RECIPE_SEED
    full_epochs: float | None = None  # epochs of the 'full' fine-tune (None: the recipe's)
    limit_test: int | None = None  # first N rows of each test target
    tasks: tuple[str, ...] | None = None  # test targets to evaluate (names, e.g. "alpaca"); None: all
    pool_limit: int | None = None  # first N rows of the pool
    score: ScoreConfig = field(default_factory=ScoreConfig)
    shed_target: str = "alpaca"  # the loss dev target SHED's value function uses
    shed_clusters: int | None = None  # None: the method's default (about sqrt(N))
    shed_permutations: int | None = None  # None: the method's default (10)
    shed_removal_k: int | None = None
    shed_dev_limit: int | None = None  # first N rows of SHED's dev target
    lobass_ref_epochs: float | None = None  # None: LoBaSS's default (1 epoch)
    shed_epochs: float | None = None  # SHED proxy fine-tunes; None: the recipe's epochs, at least 1
    dsir_top_k: bool = False  # True: deterministic top-k (runs once)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method overrides
    method_seeds: dict[str, int] = field(default_factory=dict)  # per-method seed counts (default: seeds)
    first_seed: int = 0  # run seeds first_seed..N-1 only: lanes or machines split a table's seeds
    quick: bool = False
    reuse: tuple[str, ...] = ()  # results.json files whose evaluated cells are reused (see Bench.known_cells)
    cached_only: bool = False  # report the known cells only: compute nothing, list the missing ones

    @classmethod
    def quick_config(cls, **overrides) -> "BenchConfig":
        base = dict(recipe=QUICK_RECIPE, limit_test=QUICK["limit_test"], full_epochs=QUICK["full_epochs"],
                    shed_clusters=QUICK["shed_clusters"], shed_permutations=QUICK["shed_permutations"],
                    shed_removal_k=QUICK["shed_removal_k"], shed_dev_limit=QUICK["shed_dev_limit"],
                    lobass_ref_epochs=QUICK["lobass_ref_epochs"], quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def deterministic(self, spec: str) -> bool:
        row = parse_row(spec)
        opts = {**self.method_options.get(row.method, {}), **row.options, **self.method_options.get(spec, {})}
        return row.method == "full" or (row.method == "dsir" and bool(opts.get("top_k", self.dsir_top_k)))

    def seeds_for(self, method: str) -> list[int | None]:
        if self.deterministic(method):
            return [None]
        return list(range(int(self.first_seed), int(self.method_seeds.get(method, self.seeds))))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["recipe"], d["score"], d["methods"] = self.recipe.to_dict(), self.score.to_dict(), list(self.methods)
        d["reuse"] = [str(p) for p in self.reuse]
        return d


@dataclass
class StageCounts:
    computed: dict[str, int] = field(default_factory=lambda: {"select": 0, "finetune": 0, "eval": 0})
    cached: dict[str, int] = field(default_factory=lambda: {"select": 0, "finetune": 0, "eval": 0})
    cells_reused: int = 0  # whole (row, seed) cells taken from a results.json, no stage touched

    def add(self, stage: str, computed: bool) -> None:
        (self.computed if computed else self.cached)[stage] += 1


class Bench:
    """One benchmark run over a suite, writing into ``out``; ``run()`` returns results.json's document."""

    def __init__(self, suite: str | os.PathLike | Suite, out: str | os.PathLike, config: BenchConfig | None = None,
                 *, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, command: list[str] | None = None):
        self.suite = suite if isinstance(suite, Suite) else Suite.discover(suite)
        self.out = Path(out)
        self.config = config or BenchConfig()
        self.cache_dir = Path(cache_dir) if cache_dir else self.out / "cache"
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.command = command if command is not None else list(sys.argv)
        self.counts = StageCounts()
        self._base = None
        self.rows = {spec: parse_row(spec) for spec in self.config.methods}  # raises on an unknown method
        most = max([self.config.seeds, *self.config.method_seeds.values()])  # --method-seeds may run more
        if not 0 <= self.config.first_seed < most:
            raise ShedkitError(f"--first-seed {self.config.first_seed}: must be in 0..{most - 1} "
                               f"(--seeds/--method-seeds run seeds 0..{most - 1} at most)")
        self.loads: list[dict[str, Any]] = []  # load average at each computed stage
        if any(r.method in SHED_METHODS or r.method == "first-order" for r in self.rows.values()):
            names = target_names(self.config.shed_target)
            missing = [n for n in names if n not in self.suite.dev]
            if missing or not names:
                raise ShedkitError(f"--shed-target {self.config.shed_target!r}: "
                                   + ", ".join(f"'target_{n}_dev'" for n in missing or ["(none named)"])
                                   + f" not in {self.suite.root}")
        if any(r.reference for r in self.rows.values()) and self.suite.labels is None:
            refs = sorted({r.method for r in self.rows.values() if r.reference})
            raise ShedkitError(f"{', '.join(refs)} need(s) {self.suite.root}/pool_labels.jsonl")
        for spec, row in self.rows.items():
            if row.method == "mix-random":
                of = self.mix_of(spec)
                if of == spec or (self.rows.get(of) or parse_row(of)).method == "mix-random":
                    raise ShedkitError(f"{spec}: --option {spec}.of must name a selection row, not {of!r}")

    # -- inputs ------------------------------------------------------------------------------

    def _load(self) -> None:
        from shedkit.data.pool import load_pool
        from shedkit.evaluate.tasks import load_task
        from shedkit.models.config import records_fingerprint

        pool = load_pool(self.suite.pool, skip_empty=True)
        if self.config.pool_limit:
            pool = replace(pool, records=[r for r in pool.records if r.index < self.config.pool_limit])
        self.pool = pool
        self.pool_key = records_fingerprint(pool.records)
        self.labels = read_labels(self.suite.labels)
        wanted = self.config.tasks
        unknown = sorted(set(wanted or ()) - set(self.suite.test))
        if unknown:
            raise ShedkitError(f"--tasks {', '.join(unknown)}: not a test target of {self.suite.root}; have {', '.join(self.suite.test)}")
        self.tasks = [load_task(p, name=f"{n}_test").head(self.config.limit_test) for n, p in self.suite.test.items()
                      if wanted is None or n in wanted]
        self.inputs = self.out / "inputs"

    def _dev_file(self, name: str, limit: int | None) -> str:
        """A dev target's path, or a file of its first ``limit`` rows under ``out/inputs``."""
        path = self.suite.dev[name]
        if not limit:
            return str(path)
        from shedkit.data.containers import atomic_write_text

        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()][:limit]
        target = self.inputs / f"{path.stem}.head{limit}{path.suffix}"
        if not target.exists():
            atomic_write_text(target, "\n".join(lines) + "\n")
        return str(target)

    def _dev_targets(self) -> str | list[str]:
        """SHED's and the row scores' target: one dev file, or one per task where ``--shed-target``
        names several (``alpaca,lima,gsm8k``; ``--shed-dev-limit`` applies to each). SHED's loss
        value uses their rows together; first-order ``less`` values each task and takes the max."""
        files = [self._dev_file(n, self.config.shed_dev_limit) for n in target_names(self.config.shed_target)]
        return files[0] if len(files) == 1 else files  # one name keys its cells as before

    def method_options(self, spec: str) -> dict[str, Any]:
        """Options of a row: the bench's defaults for its method < ``--option`` for the method <
        the variant's own < ``--option`` for the row spec."""
        c = self.config
        row = self.rows.get(spec) or parse_row(spec)
        method = row.method
        opts: dict[str, Any] = {"progress": self.progress}
        if method == "dsir":
            opts["target"] = [str(p) for p in self.suite.loss_dev().values()]
            opts["top_k"] = c.dsir_top_k
        elif method in SHED_METHODS:
            opts.update(target=self._dev_targets(), objective="loss", model=c.model,
                        clusters=c.shed_clusters, permutations=c.shed_permutations, removal_k=c.shed_removal_k,
                        epochs=c.shed_epochs or max(1.0, c.recipe.epochs), lr=c.recipe.lr, max_length=c.recipe.max_length,
                        batch_size=c.recipe.batch_size)
        elif method in ROW_SCORE_METHODS:
            from shedkit.pipeline.options import all_method_options, option_fields

            defaults = {"model": c.model, "max_length": c.recipe.max_length,
                        "target": self._dev_targets()}
            declared = all_method_options().get(method)  # only what the registered method takes
            opts.update({k: v for k, v in defaults.items() if declared is not None and k in option_fields(declared)})
        elif method == "lobass":
            opts.update(model=c.model, epochs=c.lobass_ref_epochs, max_length=c.recipe.max_length)
        opts.update(c.method_options.get(method, {}))  # --option METHOD.x: the plain method's settings
        opts.update(row.options)  # a variant's own options win over those
        if spec != method:
            opts.update(c.method_options.get(spec, {}))
        return {k: v for k, v in opts.items() if v is not None}

    def mix_of(self, spec: str) -> str:
        """The row whose source mix a ``mix-random`` row copies (``--option mix-random.of=ROW``)."""
        return str({**self.config.method_options.get("mix-random", {}),
                    **self.config.method_options.get(spec, {})}.get("of", MIX_RANDOM_OF))

    def recipe_for(self, spec: str) -> TrainConfig:
        if (self.rows.get(spec) or parse_row(spec)).method == "full" and self.config.full_epochs is not None:
            return replace(self.config.recipe, epochs=float(self.config.full_epochs))
        return self.config.recipe

    # -- stages ------------------------------------------------------------------------------

    def base(self):
        from shedkit.models.loading import shared_model

        if self._base is None:
            self._base = shared_model(self.config.model)
        return self._base

    def selection_key(self, spec: str, seed: int | None) -> str:
        """The select stage's key: method, seed, budget, options (files by content), pool records,
        the method's ``VERSION`` where it declares one (a changed method recomputes its cells).
        A plain row (spec == method, the bench's budget) keys exactly as before row specs existed."""
        from shedkit.pipeline.methods import method_version

        row = self.rows.get(spec) or parse_row(spec)
        opts = self.method_options(spec)
        budget = self.config.budget if row.budget is None else row.budget
        key = {"method": row.method, "seed": seed, "budget": str(budget), "pool": self.pool_key,
               "options": content_keyed({k: v for k, v in opts.items() if k != "progress"}), "v": BENCH_VERSION}
        version = None if row.reference else method_version(row.method)
        if version is not None:  # only then: cells of methods that never declared one keep their keys
            key["method_version"] = version
        if row.method == "mix-random":  # follows the selection it copies the mix of
            key["of"] = self.selection_key(self.mix_of(spec), seed)
        return stable_hash(key, 12)

    def select_stage(self, spec: str, seed: int | None) -> dict[str, Any]:
        row = self.rows.get(spec) or parse_row(spec)
        opts = self.method_options(spec)
        budget = self.config.budget if row.budget is None else row.budget
        key = self.selection_key(spec, seed)
        tag = "once" if seed is None else f"s{seed}"
        sel_dir = self.out / "selections" / f"{spec.replace('@', '-at-')}-{tag}-{key}"
        marker = sel_dir / "bench_selection.json"
        if marker.exists():
            self.counts.add("select", False)
            return json.loads(marker.read_text())
        self.log(f"[select] {spec} {tag}")
        self._note_load("select", spec, seed)
        start = time.perf_counter()
        if row.reference:
            rows, ids, select_seconds, timings = self._reference_selection(spec, row, budget, seed)
        else:
            from shedkit.pipeline.select import select

            res = select(self.pool, method=row.method, budget=budget, seed=0 if seed is None else seed,
                         out=sel_dir, skip_empty=True, cache_dir=self.cache_dir, command=self.command, **opts)
            rows, ids = [int(r) for r in res.rows], [r.id for r in res.records]
            select_seconds, timings = res.manifest["timings"].get("select"), res.manifest.get("method_timings", {})
        wall = time.perf_counter() - start
        doc = {
            "method": row.method, "row": spec, "reference": row.reference, "budget": budget,
            "seed": seed, "key": key, "dir": str(sel_dir.relative_to(self.out)),
            "rows": rows, "ids": ids,
            "select_seconds": round(float(wall if select_seconds is None else select_seconds), 3),
            "wall_seconds": round(wall, 3),
            "method_timings": timings,
            "composition": composition(self.suite.labels, self.labels, rows),
        }
        atomic_write_json(marker, doc)
        self.counts.add("select", True)
        return doc

    def _reference_selection(self, spec: str, row: BenchRow, budget, seed: int | None):
        """clean-random: seeded random rows among the labelled-clean ones; mix-random: seeded
        random rows with the source counts of another row's selection for the same seed (that
        selection is run, or read from its cache, first; its time is not this row's). See bench_rows."""
        from shedkit.selectors.budget import resolve_budget

        if row.method == "mix-random":
            of_rows = self.select_stage(self.mix_of(spec), seed)["rows"]
            start = time.perf_counter()
            positions = mix_random_positions(self.pool.records, self.labels, of_rows, seed or 0)
        else:
            start = time.perf_counter()
            n = resolve_budget(budget, len(self.pool.records))
            positions = clean_random_positions(self.pool.records, self.labels, n, seed or 0)
        picked = [self.pool.records[i] for i in positions]
        return [r.index for r in picked], [r.id for r in picked], time.perf_counter() - start, {}

    def _note_load(self, stage: str, spec: str, seed: int | None) -> None:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # pragma: no cover
            return
        self.loads.append({"stage": stage, "row": spec, "seed": seed, "time": time.strftime("%H:%M:%S"), "load": load})

    def finetune_stage(self, spec: str, selection: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        from shedkit.models.loading import model_identity

        recipe = self.recipe_for(spec)
        key = stable_hash({"model": model_identity(self.config.model), "recipe": recipe.to_dict(),
                           "seed": self.config.recipe_seed, "ids": sorted(selection["ids"]),
                           "layer": MODEL_LAYER_VERSION, "v": BENCH_VERSION}, 16)
        ft_dir = self.out / "finetunes" / key
        if (ft_dir / TRAIN_STATS).exists():
            self.counts.add("finetune", False)
            return key, json.loads((ft_dir / TRAIN_STATS).read_text())
        self._note_load("finetune", spec, selection["seed"])
        self.log(f"[finetune] {spec} {selection['seed'] if selection['seed'] is not None else 'once'}: "
                 f"{len(selection['ids'])} rows, {recipe.epochs:g} epoch(s), max_length {recipe.max_length}")
        by_id = {r.id: r for r in self.pool.records}
        records = [by_id[i] for i in selection["ids"]]
        stats = finetune_records(records, self.config.model, ft_dir, recipe, self.config.recipe_seed,
                                 base=self.base(), progress=self.progress,
                                 extra={"selection": selection["dir"]})
        self.counts.add("finetune", True)
        return key, stats

    def eval_key(self, task) -> str:
        return stable_hash({"task": task.fingerprint(), "score": self.config.score.to_dict(),
                            "layer": MODEL_LAYER_VERSION, "v": BENCH_VERSION}, 12)

    def eval_stage(self, model_key: str, model_loader: Callable[[], tuple]) -> dict[str, Any]:
        from shedkit.evaluate.harness import score_task

        results, loaded = {}, None
        for task in self.tasks:
            key = self.eval_key(task)
            path = self.out / "evals" / model_key / f"{task.name}-{key}.json"
            if path.exists():
                results[task.name] = json.loads(path.read_text())
                self.counts.add("eval", False)
                continue
            if loaded is None:
                loaded = model_loader()
            self._note_load("eval", model_key, None)
            self.log(f"[eval] {model_key[:12]} {task.name} ({len(task)} rows)")
            metrics = score_task(loaded[0], loaded[1], task, self.config.score, progress=self.progress)
            atomic_write_json(path, metrics)
            results[task.name] = metrics
            self.counts.add("eval", True)
        return results

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from shedkit.models.loading import load_model, model_identity

        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self._load()
        cells = self.known_cells()
        eval_keys = {t.name: self.eval_key(t) for t in self.tasks}
        base_key = self.cell_key(None, None)
        base_eval = self.reusable(cells.get(base_key))
        missing: list[str] = []
        if base_eval is not None:
            self.counts.cells_reused += 1
        elif self.config.cached_only:
            base_eval = self.partial_evals(cells.get(base_key))
            lacking = [t.name for t in self.tasks if t.name not in base_eval]
            missing = ["base" + (f" ({', '.join(lacking)})" if base_eval else "")]
        else:
            base_eval = self.eval_stage("base-" + stable_hash(model_identity(self.config.model), 12), self.base)
            base_eval = {k: {m: v for m, v in e.items() if m != "source"} for k, e in base_eval.items()}
            cells[base_key] = self.merge_cell(cells.get(base_key), {
                "cell": base_key, "row": "base", "method": "base", "seed": None, "cells_version": CELLS_VERSION,
                "model": self.config.model, "eval": base_eval, "eval_keys": eval_keys})
        runs = []
        for spec in self.config.methods:
            for seed in self.config.seeds_for(spec):
                key = self.cell_key(spec, seed)
                evals = self.reusable(cells.get(key))
                if evals is not None:
                    record = {**cells[key], "row": spec, "eval": evals, "reused_from_results": True}
                    record.pop("eval_keys", None)
                    self.counts.cells_reused += 1
                    runs.append(record)
                    continue
                if self.config.cached_only:
                    name = f"{spec} {'once' if seed is None else f'seed {seed}'}"
                    partial = self.partial_evals(cells.get(key))
                    if partial:  # report the tasks it has; list the others as missing
                        record = {**cells[key], "row": spec, "eval": partial, "reused_from_results": True}
                        record.pop("eval_keys", None)
                        self.counts.cells_reused += 1
                        runs.append(record)
                        name += f" ({', '.join(t.name for t in self.tasks if t.name not in partial)})"
                    missing.append(name)
                    continue
                n_loads = len(self.loads)
                sel = self.select_stage(spec, seed)
                ft_key, stats = self.finetune_stage(spec, sel)
                ft_dir = self.out / "finetunes" / ft_key
                evals = self.eval_stage(ft_key, lambda d=ft_dir: load_model(str(d)))
                record = _run_record(spec, seed, sel, ft_key, stats, evals)
                record.update(cell=key, cells_version=CELLS_VERSION, pool=self.pool_key,
                              recipe=self.recipe_for(spec).to_dict(), recipe_seed=self.config.recipe_seed,
                              model=self.config.model, load=self.loads[n_loads:])
                cells[key] = self.merge_cell(cells.get(key), {**record, "eval_keys": eval_keys})
                atomic_write_json(self.out / CELLS_FILE, {"cells": cells})  # a run cut short keeps its finished cells
                runs.append(record)
        tasks = {t.name: {"source": t.source, "rows": len(t), "kind": t.kind} for t in self.tasks}
        parts = [f"{p}_test" for p in self.suite.meta().get("mixed_test") or []]
        if parts and all(p in tasks for p in parts):  # the suite's mixed target: a derived column
            tasks[MIXED_TASK] = {"source": "equal-weight mean of " + ", ".join(parts), "kind": "records",
                                 "rows": sum(tasks[p]["rows"] for p in parts), "derived_from": parts}
            base_eval = with_mixed(base_eval, parts)
            runs = [{**r, "eval": with_mixed(r["eval"], parts)} for r in runs]
        doc = {
            "suite": str(self.suite.root),
            "suite_meta": self.suite.meta(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shedkit_command": self.command,
            "settings": self.config.to_dict(),
            "quick_settings": QUICK if self.config.quick else None,
            "deterministic_methods": [m for m in self.config.methods if self.config.deterministic(m)],
            "pool": {"path": str(self.suite.pool), "records": len(self.pool.records),
                     "skipped_empty": self.pool.skipped_empty, "pool_limit": self.config.pool_limit},
            "tasks": tasks,
            "base": base_eval,
            "runs": runs,
            "summary": summarize(runs, list(tasks), self.config),
            "stages": {"computed": self.counts.computed, "cached": self.counts.cached,
                       "cells_reused": self.counts.cells_reused},
            # load at every stage behind these results: this run's, and those the reused cells recorded
            "machine": {**machine(), "load_during": load_summary(self.loads + [x for r in runs if r.get("reused_from_results")
                                                                              for x in r.get("load") or []]),
                        "load_samples": self.loads},
            "wall_seconds": round(time.perf_counter() - start, 3),
            "eval_keys": eval_keys,
            "pool_key": self.pool_key,
            "missing_cells": missing,
            "cells": cells,
        }
        from shedkit.report.manifest import environment

        doc["environment"] = environment()
        atomic_write_json(self.out / "results.json", doc)
        from shedkit.evaluate.bench_report import write_plot, write_results_md, write_tradeoff_plot

        write_plot(doc, self.out / "results.png")
        write_tradeoff_plot(doc, self.out / "compute_vs_quality.png")
        write_results_md(doc, self.out / "results.md")
        return doc

    def cell_key(self, spec: str | None, seed: int | None) -> str:
        """A (row, seed) cell's key, by content: the selection's key (method, options, budget,
        seed, pool), the recipe and its seed, the base model and the evaluations' keys.
        ``spec=None``: the base model's evaluation."""
        from shedkit.models.loading import model_identity

        if spec is None:
            return "base-" + stable_hash({"model": model_identity(self.config.model), "v": CELLS_VERSION}, 16)
        return stable_hash({"selection": self.selection_key(spec, seed), "recipe": self.recipe_for(spec).to_dict(),
                            "recipe_seed": self.config.recipe_seed, "model": model_identity(self.config.model),
                            "v": CELLS_VERSION}, 16)

    def reusable(self, cell: dict[str, Any] | None) -> dict[str, Any] | None:
        """The cell's evaluations of this run's tasks when it has every one of them under the
        same task key (rows, scoring); else None (the stages run, from their cache where it is)."""
        if not cell:
            return None
        keys = cell.get("eval_keys") or {}
        if any(keys.get(t.name) != self.eval_key(t) or t.name not in cell.get("eval", {}) for t in self.tasks):
            return None
        return {t.name: cell["eval"][t.name] for t in self.tasks}

    def partial_evals(self, cell: dict[str, Any] | None) -> dict[str, Any]:
        """The evaluations of this run's tasks that the cell has under the same task key (rows,
        scoring): what ``--cached-only`` reports for a cell evaluated on some tasks only."""
        if not cell:
            return {}
        keys = cell.get("eval_keys") or {}
        return {t.name: cell["eval"][t.name] for t in self.tasks
                if t.name in cell.get("eval", {}) and keys.get(t.name) == self.eval_key(t)}

    @staticmethod
    def merge_cell(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """``new`` plus the evaluations of other tasks that ``old`` (the same cell) holds."""
        if not old:
            return new
        evals = {**old.get("eval", {}), **new["eval"]}
        keys = {**(old.get("eval_keys") or {}), **(new.get("eval_keys") or {})}
        return {**new, "eval": evals, "eval_keys": keys}

    def known_cells(self) -> dict[str, dict[str, Any]]:
        """Evaluated cells from ``out/results.json`` and the ``reuse`` files, merged per cell
        (a task evaluated in any file counts; for a task in several, later files win):
        a cell found here is not selected, fine-tuned or evaluated again, even when the stage
        folders are gone (a committed results.json is enough to resume a table)."""
        cells: dict[str, dict[str, Any]] = {}
        for path in [*self.config.reuse, self.out / CELLS_FILE, self.out / "results.json"]:
            path = Path(path)
            if path.is_file():
                doc = json.loads(path.read_text())
                for k, v in (doc.get("cells") or {}).items():  # merged: one file's tasks do not hide another's
                    if v.get("cells_version") == CELLS_VERSION:
                        cells[k] = self.merge_cell(cells.get(k), v)
        return cells


def content_keyed(value: Any) -> Any:
    """``value`` with every string that names an existing file replaced by a hash of the file's
    bytes, so cache keys follow content, not where the suite or the output directory lives."""
    import hashlib

    if isinstance(value, dict):
        return {k: content_keyed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [content_keyed(v) for v in value]
    if isinstance(value, (str, Path)) and len(str(value)) < 4096 and Path(value).is_file():
        return {"file_sha256": hashlib.sha256(Path(value).read_bytes()).hexdigest()[:24]}
    return value


def with_mixed(evals: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """``evals`` plus ``mixed_test``: the equal-weight mean of the ``parts`` test losses (the
    suite's ``meta.json["mixed_test"]``: a target that asks for several skills at once, each
    counted alike whatever its test set's size); unchanged when a part is missing."""
    losses = [(evals.get(p) or {}).get("loss") for p in parts]
    if any(v is None for v in losses):
        return evals
    return {**evals, MIXED_TASK: {"loss": float(np.mean(losses)), "derived_from": list(parts)}}


def _run_record(spec, seed, sel, ft_key, stats, evals) -> dict[str, Any]:
    losses = stats.get("step_losses") or []
    return {
        "row": spec, "method": sel.get("method", spec), "reference": bool(sel.get("reference")), "budget": sel.get("budget"),
        "seed": seed, "selection": sel["dir"], "rows": len(sel["rows"]),
        "composition": sel["composition"], "select_seconds": sel["select_seconds"],
        "select_wall_seconds": sel["wall_seconds"], "finetune": f"finetunes/{ft_key}",
        "finetune_seconds": stats.get("train_seconds"), "finetune_steps": stats.get("steps"),
        "finetune_rows_trained": rows_trained(stats["rows"], stats["train_config"]["epochs"]),
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "eval": {k: {m: v for m, v in e.items() if m != "source"} for k, e in evals.items()},
    }


def _stat(values: list[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": float(np.mean(vals)), "sd": sd, "n": len(vals), "values": vals}


def summarize(runs: list[dict], task_names: list[str], config: BenchConfig) -> dict[str, Any]:
    """Per row: mean ± sd over its runs (seeds) of every number in the runs."""
    out = {}
    for method in config.methods:
        mine = [r for r in runs if r.get("row", r["method"]) == method]
        if not mine:
            continue
        labels = sorted({k for r in mine for k in r["composition"].get("labels", {})})
        sources = sorted({k for r in mine for k in r["composition"].get("sources", {})})
        tasks = {}
        for t in task_names:  # over the runs evaluated on t (--cached-only may report some without it)
            have = [r for r in mine if t in r["eval"]]
            metrics = [m for m in ("loss", "acc", "acc_norm") if have and m in have[0]["eval"][t]]
            tasks[t] = {m: _stat([r["eval"][t][m] for r in have]) for m in metrics}
        out[method] = {
            "runs": len(mine),
            "method": mine[0]["method"],
            "reference": bool(mine[0].get("reference")),
            "budget": mine[0].get("budget"),
            "deterministic": config.deterministic(method),
            "seeds": [r["seed"] for r in mine],
            "rows": mine[0]["rows"],
            "finetune_rows_trained": mine[0]["finetune_rows_trained"],
            "finetune_steps": mine[0]["finetune_steps"],
            "labels": {k: _stat([r["composition"]["labels"].get(k, 0.0) for r in mine]) for k in labels},
            "sources": {k: _stat([r["composition"]["sources"].get(k, 0.0) for r in mine]) for k in sources},
            "tasks": tasks,
            "select_seconds": _stat([r["select_seconds"] for r in mine]),
            "finetune_seconds": _stat([r["finetune_seconds"] for r in mine]),
        }
    return out


def cpu_model() -> str | None:
    """The CPU's model name (lscpu's "Model name", read from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_summary(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """min/mean/max of the 1-minute load average sampled at each computed stage."""
    ones = [s["load"][0] for s in samples]
    if not ones:
        return None
    return {"samples": len(ones), "min": min(ones), "mean": round(float(np.mean(ones)), 2), "max": max(ones)}


def machine() -> dict[str, Any]:
    import torch

    from shedkit.models.device import cpu_has_fast_bf16

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "fast_bf16": cpu_has_fast_bf16(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


def run_bench(suite, out, config: BenchConfig | None = None, **kw) -> dict[str, Any]:
    """``Bench(suite, out, config, **kw).run()``."""
    return Bench(suite, out, config, **kw).run()
