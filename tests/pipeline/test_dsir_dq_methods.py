"""--method dsir and --method dq through the pipeline: options, scores columns, manifest, CLI."""

from __future__ import annotations

import csv
import json
import sys
import types

import numpy as np
import pytest

import shedkit
from shedkit.cli.main import main
from shedkit.data import load_pool
from shedkit.data.synthetic import write_demo_data
from shedkit.errors import ShedkitError
from shedkit.pipeline.methods import dq as dq_method
from shedkit.pipeline.methods import dsir as dsir_method
from shedkit.pipeline.methods.base import MethodContext
from shedkit.selectors.dsir import dsir_select


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("data"), n=200, seed=1)


def context(records, budget, tmp_path, seed=0, **options) -> MethodContext:
    return MethodContext(records=records, budget=budget, seed=seed, options=options,
                         run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")


def scores(out) -> list[dict[str, str]]:
    return list(csv.DictReader(open(out / "scores.csv")))


# ------------------------------------------------------------------------------------------ DSIR


def test_dsir_end_to_end(data, tmp_path):
    out = tmp_path / "run"
    res = shedkit.select(data["pool"], method="dsir", budget=30, seed=0, out=out, target=[data["target_dev"]])
    assert len(res.positions) == 30
    rows = scores(out)
    assert len(rows) == 200 and "dsir_logw" in rows[0]
    assert sum(r["selected"] == "1" for r in rows) == 30
    manifest = json.loads((out / "manifest.json").read_text())["method"]
    assert manifest["name"] == "dsir" and manifest["quotas"] == [30]
    assert manifest["sampling"] == "gumbel-top-k" and manifest["hashing"] == "sha256"
    assert manifest["normalize"] is False and manifest["min_tokens"] == 0


def test_dsir_method_equals_the_selector_on_record_texts(data, tmp_path):
    records = load_pool(data["pool"]).records
    target = [r.text for r in load_pool(data["target_dev"]).records]
    for options in ({}, {"dsir_top_k": True, "dsir_normalize": True}, {"top_k": True, "dsir_buckets": 512}):
        result = dsir_method.run(context(records, 25, tmp_path, seed=3, target=str(data["target_dev"]), **options))
        expected = dsir_select(
            [r.text for r in records], [target], 25, seed=3,
            top_k=bool(options.get("dsir_top_k", options.get("top_k", False))),
            normalize=bool(options.get("dsir_normalize", False)),
            num_buckets=options.get("dsir_buckets", 10_000),
        )
        np.testing.assert_array_equal(result.selected, expected.selected)
        np.testing.assert_allclose(result.columns["dsir_logw"], expected.log_weights)


def test_dsir_top_k_takes_the_highest_log_weights(data, tmp_path):
    records = load_pool(data["pool"]).records
    result = dsir_method.run(context(records, 20, tmp_path, target=data["target_dev"], top_k=True))
    logw = np.array(result.columns["dsir_logw"])
    assert logw[result.selected].min() >= np.sort(logw)[-20]


def test_dsir_several_targets(data, tmp_path):
    records = load_pool(data["pool"]).records
    result = dsir_method.run(context(records, 40, tmp_path, target=[data["target_dev"], data["target_test"]]))
    assert set(result.columns) == {"dsir_logw", "dsir_logw_t0", "dsir_logw_t1", "dsir_target"}
    quotas = result.info["quotas"]
    assert sum(quotas) == 40 and len(result.selected) == 40
    chosen_for = np.array(result.columns["dsir_target"])
    assert [(chosen_for == t).sum() for t in (0, 1)] == quotas
    # the test target has twice the dev target's rows, so about twice its tokens and its quota
    assert quotas[1] > quotas[0]


def test_dsir_multiple_choice_target_uses_every_string_field(data, tmp_path):
    mc = tmp_path / "arc.jsonl"
    mc.write_text(json.dumps({"query": "Question: what is 2 + 3?", "choices": ["4", "5"], "gold": 1}) + "\n")
    assert dsir_method.load_target_texts(mc) == ["Question: what is 2 + 3?\n4\n5"]
    records = load_pool(data["pool"]).records
    assert len(dsir_method.run(context(records, 10, tmp_path, target=mc)).selected) == 10


def test_dsir_leaves_system_prompts_out_unless_asked(data, tmp_path):
    # rows 2k and 2k+1 differ only by a long system prompt (shared by every even row, and by the
    # target's rows): left out, each pair has one log weight; kept, the prompt moves every prompted row
    system = "You are a meticulous assistant who always answers in formal English. " * 4
    records = load_pool(data["pool"]).records[:40]
    pool = tmp_path / "messages.jsonl"
    with pool.open("w") as f:
        for r in records:
            turns = [{"role": t.role, "content": t.content} for t in r.turns if t.role != "system"]
            f.write(json.dumps({"messages": [{"role": "system", "content": system}, *turns]}) + "\n")
            f.write(json.dumps({"messages": turns}) + "\n")
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"messages": [{"role": "system", "content": system},
                                                       {"role": "user", "content": r.turns[0].content},
                                                       {"role": "assistant", "content": "ok"}]}) + "\n"
                              for r in load_pool(data["target_dev"]).records[:20]))
    both = load_pool(pool).records
    result = dsir_method.run(context(both, 10, tmp_path, target=target))
    logw = np.array(result.columns["dsir_logw"])
    np.testing.assert_allclose(logw[0::2], logw[1::2])
    assert result.info["system_prompts"] is False
    kept = dsir_method.run(context(both, 10, tmp_path, target=target, dsir_system=True))
    logw = np.array(kept.columns["dsir_logw"])
    shift = logw[0::2] - logw[1::2]  # the prompt's n-grams: about one shift for every prompted row
    assert np.abs(shift).min() > 1.0 and np.ptp(shift) < 0.1 * np.abs(shift).mean()
    assert kept.info["system_prompts"] is True
    assert dsir_method.VERSION == "2"  # a changed method: the bench recomputes its cells


def test_dsir_needs_a_target(data, tmp_path):
    records = load_pool(data["pool"]).records
    with pytest.raises(ShedkitError, match="--target"):
        dsir_method.run(context(records, 10, tmp_path))
    with pytest.raises(ShedkitError, match="does not exist"):
        dsir_method.run(context(records, 10, tmp_path, target=tmp_path / "missing.jsonl"))


def test_dsir_cli(data, tmp_path):
    out = tmp_path / "cli"
    argv = ["select", str(data["pool"]), "--method", "dsir", "--target", str(data["target_dev"]),
            "--budget", "0.1", "--out", str(out), "--top-k", "--dsir-normalize", "--dsir-buckets", "2048",
            "--dsir-system"]
    assert main(argv) == 0
    info = json.loads((out / "manifest.json").read_text())["method"]
    assert info["sampling"] == "top-k" and info["normalize"] is True and info["num_buckets"] == 2048
    assert info["system_prompts"] is True


# ------------------------------------------------------------------------------------------ DQ


def test_dq_end_to_end_with_hashed_ngrams(data, tmp_path):
    out = tmp_path / "run"
    res = shedkit.select(data["pool"], method="dq", budget=25, seed=0, out=out, embedder="hashed-ngrams", bins=5,
                         cache_dir=tmp_path / "cache")
    assert len(res.positions) == 25
    rows = scores(out)
    bins = np.array([int(r["dq_bin"]) for r in rows])
    np.testing.assert_array_equal(np.bincount(bins), [40] * 5)
    picked = np.array([r["selected"] == "1" for r in rows])
    np.testing.assert_array_equal(np.bincount(bins[picked]), [5] * 5)
    info = json.loads((out / "manifest.json").read_text())["method"]
    assert info["mode"] == "exact" and info["embedder"] == "hashed-ngrams" and info["quotas"] == [5] * 5
    again = shedkit.select(data["pool"], method="dq", budget=25, seed=0, embedder="hashed-ngrams", bins=5,
                           cache_dir=tmp_path / "cache")
    other = shedkit.select(data["pool"], method="dq", budget=25, seed=1, embedder="hashed-ngrams", bins=5,
                           cache_dir=tmp_path / "cache")
    assert again.rows == res.rows and other.rows != res.rows


def test_dq_gets_embeddings_from_embed_records(data, tmp_path, monkeypatch):
    records = load_pool(data["pool"]).records
    calls = {}

    def fake_embed_records(recs, embedder, cache_dir, **kwargs):
        calls.update(n=len(recs), embedder=embedder, cache_dir=cache_dir)
        return np.random.default_rng(0).normal(size=(len(recs), 16)).astype(np.float32)

    fake = types.ModuleType("shedkit.embed")
    fake.embed_records = fake_embed_records
    monkeypatch.setitem(sys.modules, "shedkit.embed", fake)
    ctx = context(records, 30, tmp_path, embedder="my-model", bins=3, dq_mode="partitioned", dq_partition_size=80)
    result = dq_method.run(ctx)
    assert calls == {"n": 200, "embedder": "my-model", "cache_dir": ctx.cache_dir}
    assert len(result.selected) == 30 and result.info["mode"] == "partitioned"
    assert result.info["partitions"] >= 2 and set(result.timings) >= {"embed", "bins", "sample"}
