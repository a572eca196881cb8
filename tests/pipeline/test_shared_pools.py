"""The public pools in ../shared go through `select --method random` with correct subsets."""

import csv
import json

from shared_data import shared_path
from shedkit.cli.main import main


def test_sharegpt_dummy(tmp_path):
    src = shared_path("data", "sharegpt", "dummy_conversation.json")
    out = tmp_path / "o"
    assert main(["select", str(src), "--budget", "0.1", "--out", str(out), "--seed", "1"]) == 0
    original = json.loads(src.read_text())
    subset = json.loads((out / "subset.json").read_text())
    chosen = [int(r["row"]) for r in csv.DictReader(open(out / "scores.csv")) if r["selected"] == "1"]
    assert len(subset) == 50 and subset == [original[i] for i in chosen]


def test_noisy_mix_pool(tmp_path):
    src = shared_path("bench", "noisy-mix-v1", "pool.jsonl")
    out = tmp_path / "o"
    assert main(["select", str(src), "--budget", "300", "--out", str(out), "--skip-empty"]) == 0
    lines = src.read_text().splitlines(keepends=True)
    scores = list(csv.DictReader(open(out / "scores.csv")))
    chosen = [int(r["row"]) for r in scores if r["selected"] == "1"]
    assert len(chosen) == 300 and 2828 not in [int(r["row"]) for r in scores]  # the empty row is left out
    assert (out / "subset.jsonl").read_text() == "".join(lines[i] for i in chosen)
