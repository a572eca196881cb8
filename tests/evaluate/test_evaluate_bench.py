"""`shedkit bench` end to end on a tiny suite (tiny-random, synthetic pool): results, and a
rerun with one more seed computes only that seed's stages."""

import json

import pytest

from shedkit.cli.main import main
from shedkit.data.synthetic import make_pool
from shedkit.evaluate.bench import BenchConfig


@pytest.fixture
def suite(tmp_path, write_jsonl):
    d = tmp_path / "suite"
    d.mkdir()
    rows, labels = make_pool(60, corrupt_fraction=0.25, seed=0)
    write_jsonl(d / "pool.jsonl", rows)
    write_jsonl(d / "pool_labels.jsonl", labels)
    dev, _ = make_pool(8, corrupt_fraction=0.0, seed=1)
    test, _ = make_pool(12, corrupt_fraction=0.0, seed=2)
    write_jsonl(d / "target_alpaca_dev.jsonl", dev)
    write_jsonl(d / "target_alpaca_test.jsonl", test)
    mc = [{"query": f"Question: What is {a} + {a}?", "choices": [str(2 * a), str(2 * a + 1), "purple"], "gold": 0}
          for a in range(1, 7)]
    write_jsonl(d / "target_arc_easy_dev.jsonl", mc[:2])
    write_jsonl(d / "target_arc_easy_test.jsonl", mc)
    return d


def _bench(suite, out, seeds):
    return main(["bench", "--suite", str(suite), "--out", str(out), "--methods", "random,full", "--seeds", str(seeds),
                 "--quick", "--model", "tiny-random", "--pool-limit", "40", "--limit-test", "5", "--budget", "0.1",
                 "--no-progress"])


def test_bench_end_to_end_and_incremental_seeds(tmp_path, suite):
    out = tmp_path / "bench"
    assert _bench(suite, out, 1) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["pool"]["records"] == 40 and doc["settings"]["quick"] and doc["quick_settings"]["limit_test"] == 100
    assert doc["settings"]["limit_test"] == 5  # the flag wins over --quick's default
    assert set(doc["tasks"]) == {"alpaca_test", "arc_easy_test"} and doc["tasks"]["alpaca_test"]["rows"] == 5
    assert doc["deterministic_methods"] == ["full"]
    assert [(r["method"], r["seed"]) for r in doc["runs"]] == [("random", 0), ("full", None)]
    for run in doc["runs"]:
        assert run["rows"] == (4 if run["method"] == "random" else 40)
        assert set(run["composition"]["labels"]) >= {"clean", "corrupted", "misaligned", "truncated", "boilerplate", "wrong_answer"}
        assert set(run["eval"]["alpaca_test"]) >= {"loss", "n_rows"} and set(run["eval"]["arc_easy_test"]) >= {"acc", "acc_norm"}
        assert run["select_seconds"] >= 0 and run["finetune_seconds"] > 0
        assert run["finetune_rows_trained"] == (4 if run["method"] == "random" else 10)  # 1 epoch; full: 0.25 epoch
    full = doc["summary"]["full"]
    assert full["deterministic"] and full["runs"] == 1
    labels = [json.loads(line)["label"] for line in (suite / "pool_labels.jsonl").read_text().splitlines()][:40]
    assert full["labels"]["corrupted"]["mean"] == pytest.approx(sum(x != "clean" for x in labels) / 40)
    assert full["labels"]["misaligned"]["mean"] == pytest.approx(labels.count("misaligned") / 40)
    summary = doc["summary"]["random"]
    assert summary["tasks"]["alpaca_test"]["loss"]["mean"] > 0 and summary["tasks"]["arc_easy_test"]["acc"]["n"] == 1
    assert summary["select_seconds"]["mean"] is not None and summary["finetune_seconds"]["mean"] is not None
    assert set(doc["base"]) == {"alpaca_test", "arc_easy_test"}
    n_tasks = 2
    assert doc["stages"]["computed"] == {"select": 2, "finetune": 2, "eval": 3 * n_tasks}  # base + 2 models
    md = (out / "results.md").read_text()
    assert "| random | 1 seed |" in md and "| full | once |" in md and "--quick" in md and "run once" in md
    assert "Compute behind these results" in md and "Method settings:" not in md  # random and full have no settings
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ft_stats = json.loads(next((out / "finetunes").glob("*/train_stats.json")).read_text())
    assert ft_stats["train_config"]["max_length"] == 256 and ft_stats["train_config"]["epochs"] in (1.0, 0.25)

    # one more seed: only random seed 1 is selected, fine-tuned and evaluated
    assert _bench(suite, out, 2) == 0
    doc2 = json.loads((out / "results.json").read_text())
    assert doc2["stages"]["computed"] == {"select": 1, "finetune": 1, "eval": n_tasks}
    assert doc2["stages"]["cached"] == {"select": 2, "finetune": 2, "eval": 3 * n_tasks}
    assert [(r["method"], r["seed"]) for r in doc2["runs"]] == [("random", 0), ("random", 1), ("full", None)]
    assert doc2["summary"]["random"]["runs"] == 2 and doc2["summary"]["random"]["tasks"]["alpaca_test"]["loss"]["sd"] is not None
    first = {(r["method"], r["seed"]): r for r in doc["runs"]}
    for r in doc2["runs"]:
        if (r["method"], r["seed"]) in first:
            assert r["eval"] == first[(r["method"], r["seed"])]["eval"]


def test_bench_recipe_spells_out_every_field():
    """The fixed recipe names each TrainConfig field, so a changed default cannot change it."""
    import ast
    import inspect
    from dataclasses import fields

    from shedkit.evaluate import recipe
    from shedkit.models import TrainConfig

    call = next(n for n in ast.walk(ast.parse(inspect.getsource(recipe)))
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "BENCH_RECIPE").value
    assert {k.arg for k in call.keywords} == {f.name for f in fields(TrainConfig)}


def test_deterministic_methods_run_once():
    cfg = BenchConfig(methods=("random", "dsir", "full"), seeds=3)
    assert cfg.seeds_for("random") == [0, 1, 2] and cfg.seeds_for("dsir") == [0, 1, 2] and cfg.seeds_for("full") == [None]
    top = BenchConfig(methods=("dsir",), dsir_top_k=True)
    assert top.seeds_for("dsir") == [None]
    assert BenchConfig(method_options={"dsir": {"top_k": True}}).deterministic("dsir")
    per = BenchConfig(seeds=1, method_seeds={"random": 3})
    assert per.seeds_for("random") == [0, 1, 2] and per.seeds_for("dq") == [0] and per.seeds_for("full") == [None]


def test_selection_keys_follow_file_content_not_paths(tmp_path):
    from shedkit.evaluate.bench import content_keyed

    a, b = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl"
    b.parent.mkdir()
    a.write_text("x\n")
    b.write_text("x\n")
    assert content_keyed({"target": [str(a)], "k": 3}) == content_keyed({"target": [str(b)], "k": 3})
    b.write_text("y\n")
    assert content_keyed({"target": [str(a)]}) != content_keyed({"target": [str(b)]})
    assert content_keyed({"model": "tiny-random"}) == {"model": "tiny-random"}


def test_bench_rejects_unknown_method(tmp_path, suite):
    code = main(["bench", "--suite", str(suite), "--out", str(tmp_path / "b"), "--methods", "randon", "--model", "tiny-random"])
    assert code == 2
