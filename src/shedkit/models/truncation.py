"""How much truncation to ``max_length`` cut: rows cut and tokens dropped, for the manifest.

Truncation is otherwise silent (``encode`` cuts rows to ``max_length``, prompt first). Each
stage that encodes rows reports ``{rows, truncated_rows, dropped_tokens, max_length}`` from
these helpers, which encode each row once more without a limit and compare the lengths.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from shedkit.data.records import Record

NO_LIMIT = sys.maxsize


def _summary(lengths: Sequence[int], max_length: int) -> dict[str, Any]:
    over = [n - max_length for n in lengths if n > max_length]
    return {"rows": len(lengths), "truncated_rows": len(over), "dropped_tokens": int(sum(over)),
            "max_length": int(max_length)}


def record_truncation(tokenizer, records: Sequence[Record], max_length: int, template: str = "auto") -> dict[str, Any]:
    """Rows of ``records`` longer than ``max_length`` tokens (as trained/scored) and the tokens cut."""
    from shedkit.models.encode import encode_record, has_empty_response

    lengths = [len(encode_record(tokenizer, r, NO_LIMIT, template)) for r in records if not has_empty_response(r)]
    return _summary(lengths, max_length)


def mc_truncation(tokenizer, items, max_length: int, query_suffix: str = "auto") -> dict[str, Any]:
    """Context + choice pairs longer than lm-eval's window (``max_length + 1`` tokens, the last
    only predicted), counted per pair, and the tokens cut from their left."""
    from shedkit.models.encode import encode_continuation
    from shedkit.models.objectives import lm_eval_pair, mc_context

    lengths = []
    for item in items:
        for choice in item.choices:
            context, continuation = lm_eval_pair(mc_context(item.query, query_suffix), " " + choice)
            lengths.append(len(encode_continuation(tokenizer, context, continuation, NO_LIMIT)))
    out = _summary(lengths, max_length + 1)
    out["max_length"] = int(max_length)
    return out


def dev_truncation(tokenizer, dev, objective) -> dict[str, Any]:
    """Truncation of a dev set as ``objective`` scores it (loss rows or multiple-choice pairs)."""
    if objective.name == "mc-accuracy":
        return mc_truncation(tokenizer, dev.items, objective.score.max_length, objective.query_suffix)
    return record_truncation(tokenizer, dev.records, objective.score.max_length, objective.score.template)
