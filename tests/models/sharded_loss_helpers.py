"""Shared by the sharded loss tests (a plain module: ``from sharded_loss_helpers import ...``)."""

from pathlib import Path

import numpy as np

from shedkit.models import ScoreConfig
from shedkit.models.loading import model_identity

FP32 = ScoreConfig(precision="fp32", max_length=96)
TINY_ID = model_identity("tiny-random")

# the rows, as code: a killed subprocess builds the very same ones
ROWS_CODE = """
from shedkit.data.records import Turn, make_record

def make_rows(n):
    return [make_record(i, [Turn("user", f"Question {i}: " + "why? " * (i % 5)),
                            Turn("assistant", f"Answer {i} " + "because. " * (i % 7 + 1))], {"i": i})
            for i in range(n)]
"""
_ns: dict = {}
exec(ROWS_CODE, _ns)
make_rows = _ns["make_rows"]


def parts(cache_dir):
    """The loss cache's part files (what a reader reads)."""
    return sorted(Path(cache_dir).glob("losses/*/part-*.jsonl"))


def assert_same(a, b, ifd=False):
    """Two LossResults hold the same rows and the same numbers, bit for bit."""
    assert a.ids == b.ids and np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.n_tokens, b.n_tokens)
    if ifd:
        assert np.array_equal(a.loss_last, b.loss_last) and np.array_equal(a.loss_alone, b.loss_alone)
