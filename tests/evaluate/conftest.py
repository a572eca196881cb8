"""Fixtures for the evaluate tests: tiny-random only, one torch thread, small files in tmp_path."""

import json

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread_eval(one_torch_thread):
    """Every test here runs torch on one thread (see ``one_torch_thread``)."""


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def write_jsonl():
    return _jsonl


@pytest.fixture
def mc_rows():
    """Three ARC-style questions (the harness appends "\\nAnswer:" to "Question: ..." queries)."""
    return [
        {"query": "Question: Which is a colour?", "choices": ["red", "a table", "seventeen"], "gold": 0},
        {"query": "Question: Which one can fly?", "choices": ["a bird", "stone"], "gold": 0},
        {"query": "Question: Pick the tool.", "choices": ["hammer", "cloud", "rain on a very long afternoon"], "gold": 2},
    ]


@pytest.fixture
def alpaca_rows():
    from shedkit.data.synthetic import make_pool

    rows, _ = make_pool(24, corrupt_fraction=0.0, seed=3)
    return rows
