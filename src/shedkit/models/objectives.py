"""Task scores of a model on a target dev set: the value function's objectives.

``loss``         score = minus the mean per-token response loss over the dev rows (all their
                 response tokens pooled, i.e. token-weighted); rows are any Record
                 (Alpaca, ShareGPT, ... as the data layer reads them).
``mc-accuracy``  rows ``{query, choices, gold}``; as lm-evaluation-harness scores ARC/MMLU:
                 each choice's log-likelihood is the sum of the log-probs of the tokens of
                 ``" " + choice`` after the context; ``acc`` = argmax is gold, ``acc_norm`` =
                 argmax of log-likelihood / ``len(choice)`` is gold. lm-eval calls this "byte
                 length" but divides by the string's length in characters (the choice without
                 its leading space); so does this (identical for ASCII).
                 The context is the query plus ``query_suffix``: "auto" appends "\\nAnswer:"
                 to a query that starts with "Question:" and does not already end with
                 "Answer:" (the llm-foundry {query, choices, gold} files strip it; lm-eval's
                 ARC prompt is "Question: {q}\\nAnswer:"), and nothing otherwise.
No chat template is applied to multiple-choice contexts (lm-eval's default).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shedkit.data.records import Record
from shedkit.errors import InputError, ShedkitError
from shedkit.models.config import ScoreConfig, stable_hash
from shedkit.models.encode import encode_continuation, encode_options, encode_record, has_empty_response
from shedkit.models.scoring import pad_id_of, token_logprobs

OBJECTIVES = ("auto", "loss", "mc-accuracy")
MC_FIELDS = ("query", "choices", "gold")


@dataclass(frozen=True)
class MCItem:
    query: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class DevSet:
    """A target dev set: records (for ``loss``) or multiple-choice items (``mc-accuracy``)."""

    records: tuple[Record, ...] = ()
    items: tuple[MCItem, ...] = ()
    source: str = ""

    @property
    def kind(self) -> str:
        return "mc" if self.items else "records"

    @property
    def default_objective(self) -> str:
        return "mc-accuracy" if self.items else "loss"

    def __len__(self) -> int:
        return len(self.items) if self.items else len(self.records)

    def fingerprint(self) -> str:
        """Content hash (not the path): equal content gives equal cache keys anywhere."""
        if self.items:
            return stable_hash(["mc", [[i.query, list(i.choices), i.gold] for i in self.items]])
        return stable_hash(["records", [r.id for r in self.records]])

    @classmethod
    def of(cls, dev: "DevSet | str | os.PathLike | Sequence[Record] | Sequence[MCItem] | Sequence[dict]") -> "DevSet":
        """Accept a DevSet, a path (see ``read_dev``), records, MCItems or MC dicts."""
        if isinstance(dev, DevSet):
            return dev
        if isinstance(dev, (str, os.PathLike)):
            return read_dev(dev)
        rows = list(dev)
        if not rows:
            raise ShedkitError("the dev set is empty")
        if all(isinstance(r, Record) for r in rows):
            return cls(records=tuple(rows))
        if all(isinstance(r, MCItem) for r in rows):
            return cls(items=tuple(rows))
        return cls(items=tuple(_mc_item(r, "<dev rows>", i) for i, r in enumerate(rows)))


def _mc_item(row: Any, path, i: int, line: int | None = None) -> MCItem:
    where = dict(line=line) if line else dict(row=i)
    if not isinstance(row, dict) or not all(k in row for k in MC_FIELDS):
        raise InputError(path, f"a multiple-choice row needs the fields {MC_FIELDS}", **where)
    choices, gold = row["choices"], row["gold"]
    if not isinstance(row["query"], str) or not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise InputError(path, "'query' must be a string and 'choices' a list of at least 2 strings", **where)
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise InputError(path, f"'gold' must be an index into the {len(choices)} choices, not {gold!r}", **where)
    return MCItem(row["query"], tuple(choices), gold)


def read_dev(path: str | os.PathLike, format: str | None = None) -> DevSet:
    """Read a dev file (JSONL/JSON/CSV/Parquet/HF dir, via the data layer): rows with
    ``{query, choices, gold}`` become multiple-choice items, anything else goes through the
    pool reader (format detected, or ``format``) and becomes records."""
    from shedkit.data.containers import read_table
    from shedkit.data.pool import load_pool

    path = Path(path)
    table = read_table(path)
    if not table.rows:
        raise InputError(path, "the dev set is empty (no rows)")
    if format is None and all(k in table.rows[0] for k in MC_FIELDS):
        items = tuple(_mc_item(r, path, i, table.row_lines[i] or None) for i, r in enumerate(table.rows))
        return DevSet(items=items, source=str(path))
    return DevSet(records=tuple(load_pool(path, format=format).records), source=str(path))


@dataclass(frozen=True)
class Objective:
    """What a dev set is scored by; ``name`` 'auto' picks from the dev set's rows."""

    name: str = "auto"
    mc_metric: str = "acc"  # the score of mc-accuracy: 'acc' or 'acc_norm' (both are reported)
    query_suffix: str = "auto"
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            from shedkit.util.registry import unknown_name

            raise unknown_name("objective", self.name, OBJECTIVES)
        if self.mc_metric not in ("acc", "acc_norm"):
            raise ShedkitError(f"mc_metric must be 'acc' or 'acc_norm', not {self.mc_metric!r}")

    @classmethod
    def of(cls, objective: "Objective | str | None") -> "Objective":
        if isinstance(objective, Objective):
            return objective
        return cls(name=objective or "auto")

    def resolve(self, dev: DevSet) -> "Objective":
        name = dev.default_objective if self.name == "auto" else self.name
        if name == "mc-accuracy" and not dev.items:
            raise ShedkitError("objective 'mc-accuracy' needs {query, choices, gold} dev rows; these are instruction rows (use 'loss')")
        if name == "loss" and not dev.records:
            raise ShedkitError("objective 'loss' needs instruction/response dev rows; these are multiple-choice rows (use 'mc-accuracy')")
        return Objective(name, self.mc_metric, self.query_suffix, self.score)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "score": self.score.to_dict()}


@dataclass
class ObjectiveResult:
    objective: str
    score: float  # higher is better
    metrics: dict[str, Any]


def mc_context(query: str, query_suffix: str = "auto") -> str:
    if query_suffix != "auto":
        return query + query_suffix
    q = query.rstrip()
    if q.startswith("Question:") and not q.endswith("Answer:"):
        return query + "\nAnswer:"
    return query


def lm_eval_pair(context: str, continuation: str) -> tuple[str, str]:
    """The (context, continuation) lm-evaluation-harness scores: every trailing whitespace
    character of the context (newlines too: ``context.rstrip()``) moves to the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def mc_loglikelihoods(model, tokenizer, items: Sequence[MCItem], config: ScoreConfig | None = None,
                      query_suffix: str = "auto", progress: bool = False) -> list[np.ndarray]:
    """Per item, the log-likelihood of each choice (sum over its tokens) after the context.

    As lm-evaluation-harness's HF model: the pair is split by ``lm_eval_pair``; a pair longer
    than ``max_length`` keeps its last ``max_length + 1`` tokens, of which the model reads all
    but the last (the last is only predicted), so the model sees ``max_length`` tokens."""
    config = config or ScoreConfig()
    seqs, owner = [], []
    for i, item in enumerate(items):
        for choice in item.choices:
            context, continuation = lm_eval_pair(mc_context(item.query, query_suffix), " " + choice)
            seqs.append(encode_continuation(tokenizer, context, continuation, config.max_length + 1))
            owner.append(i)
    lps = token_logprobs(model, seqs, pad_id=pad_id_of(tokenizer), batch_size=config.batch_size,
                         max_batch_tokens=config.max_batch_tokens, precision=config.precision,
                         progress=progress, desc="multiple choice")
    out: list[list[float]] = [[] for _ in items]
    for i, lp in zip(owner, lps):
        out[i].append(float(lp.sum()))
    return [np.asarray(x) for x in out]


def mc_accuracy(model, tokenizer, items: Sequence[MCItem], config: ScoreConfig | None = None,
                query_suffix: str = "auto", progress: bool = False) -> dict[str, Any]:
    """``{acc, acc_norm, n, loglikelihoods}`` as lm-evaluation-harness computes them."""
    lls = mc_loglikelihoods(model, tokenizer, items, config, query_suffix, progress)
    acc = [float(np.argmax(ll) == it.gold) for ll, it in zip(lls, items)]
    norm = [float(np.argmax(ll / np.array([float(len(c)) for c in it.choices])) == it.gold) for ll, it in zip(lls, items)]
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(norm)), "n": len(items),
            "loglikelihoods": [ll.tolist() for ll in lls]}


def dev_loss(model, tokenizer, records: Sequence[Record], config: ScoreConfig | None = None, progress: bool = False) -> dict[str, Any]:
    """``{loss, row_mean_loss, n_rows, n_tokens}``: token-weighted mean response loss over all
    dev rows, and the mean of per-row means. Rows with an empty response are an error."""
    config = config or ScoreConfig()
    empty = [r for r in records if has_empty_response(r)]
    if empty:
        raise ShedkitError(f"{len(empty)} dev row(s) have an empty response (first: record {empty[0].id}, row {empty[0].index})")
    seqs = [encode_record(tokenizer, r, config.max_length, **encode_options(config)) for r in records]
    lps = token_logprobs(model, seqs, pad_id=pad_id_of(tokenizer), batch_size=config.batch_size,
                         max_batch_tokens=config.max_batch_tokens, precision=config.precision,
                         progress=progress, desc="dev loss")
    total = sum(float(-lp.sum()) for lp in lps)
    n_tokens = sum(len(lp) for lp in lps)
    return {"loss": total / n_tokens, "row_mean_loss": float(np.mean([-lp.mean() for lp in lps])),
            "n_rows": len(records), "n_tokens": int(n_tokens)}


def evaluate(model, tokenizer, dev, objective: Objective | str | None = "auto", progress: bool = False) -> ObjectiveResult:
    """Score ``model`` on ``dev`` (DevSet, path, records or MC items). Higher is better."""
    dev = DevSet.of(dev)
    obj = Objective.of(objective).resolve(dev)
    if obj.name == "loss":
        metrics = dev_loss(model, tokenizer, dev.records, obj.score, progress)
        return ObjectiveResult("loss", -metrics["loss"], metrics)
    metrics = mc_accuracy(model, tokenizer, dev.items, obj.score, obj.query_suffix, progress)
    return ObjectiveResult("mc-accuracy", metrics[obj.mc_metric], metrics)


__all__ = ["DevSet", "MCItem", "Objective", "ObjectiveResult", "OBJECTIVES", "dev_loss",
           "evaluate", "mc_accuracy", "mc_context", "mc_loglikelihoods", "read_dev"]
