"""Truncation counts: rows cut to max_length and the tokens dropped, against the tokenizer's lengths."""

from shedkit.models.encode import encode_continuation, encode_record
from shedkit.models.objectives import MCItem
from shedkit.models.truncation import NO_LIMIT, mc_truncation, record_truncation


def test_record_truncation_counts_rows_and_dropped_tokens(tiny, rows):
    _, tok = tiny
    lengths = [len(encode_record(tok, r, NO_LIMIT, "plain")) for r in rows]
    limit = sorted(lengths)[len(lengths) // 2]
    out = record_truncation(tok, rows, limit, "plain")
    assert out == {"rows": len(rows), "truncated_rows": sum(n > limit for n in lengths),
                   "dropped_tokens": sum(n - limit for n in lengths if n > limit), "max_length": limit}
    # what encode keeps: exactly max_length tokens of every truncated row
    assert all(len(encode_record(tok, r, limit, "plain")) == min(n, limit) for r, n in zip(rows, lengths))
    assert record_truncation(tok, rows, max(lengths), "plain")["truncated_rows"] == 0


def test_mc_truncation_counts_against_lm_evals_window(tiny):
    _, tok = tiny
    item = MCItem("Question: " + "x" * 40, ("yes", "no"), 0)
    # byte-level tokenizer: "Question: " + 40 x + "\nAnswer:" + " yes" / " no"
    n = [len(encode_continuation(tok, "Question: " + "x" * 40 + "\nAnswer:", c, NO_LIMIT)) for c in (" yes", " no")]
    assert n == [10 + 40 + 8 + 4, 10 + 40 + 8 + 3]
    out = mc_truncation(tok, [item], max_length=60)  # the window is 61 tokens
    assert out == {"rows": 2, "truncated_rows": 1, "dropped_tokens": 1, "max_length": 60}
