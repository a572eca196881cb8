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
    # the finished cells (base, random seed 0, full) come whole from the previous results.json
    assert doc2["stages"]["cached"] == {"select": 0, "finetune": 0, "eval": 0} and doc2["stages"]["cells_reused"] == 3
    assert [(r["method"], r["seed"]) for r in doc2["runs"]] == [("random", 0), ("random", 1), ("full", None)]
    assert doc2["summary"]["random"]["runs"] == 2 and doc2["summary"]["random"]["tasks"]["alpaca_test"]["loss"]["sd"] is not None
    first = {(r["method"], r["seed"]): r for r in doc["runs"]}
    for r in doc2["runs"]:
        if (r["method"], r["seed"]) in first:
            assert r["eval"] == first[(r["method"], r["seed"])]["eval"]

    # without results.json (and cells.json) the stage folders still hold every stage: nothing is recomputed
    assert json.loads((out / "cells.json").read_text())["cells"].keys() == doc2["cells"].keys()
    (out / "results.json").unlink()
    (out / "cells.json").unlink()
    assert _bench(suite, out, 2) == 0
    doc3 = json.loads((out / "results.json").read_text())
    assert doc3["stages"]["computed"] == {"select": 0, "finetune": 0, "eval": 0}
    assert doc3["stages"]["cached"] == {"select": 3, "finetune": 3, "eval": 4 * n_tasks}
    assert [r["eval"] for r in doc3["runs"]] == [r["eval"] for r in doc2["runs"]]


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
    lane = BenchConfig(seeds=3, first_seed=2, method_seeds={"random": 5})
    assert lane.seeds_for("dq") == [2] and lane.seeds_for("random") == [2, 3, 4] and lane.seeds_for("full") == [None]


def test_two_lanes_split_the_seeds_and_join(tmp_path, suite):
    """--first-seed: a second lane (own output folder) runs seed 1 only; the first lane runs
    seed 0 and reuses the second's cell instead of recomputing it."""
    def bench(out, *extra):
        return main(["bench", "--suite", str(suite), "--out", str(out), "--methods", "random", "--seeds", "2",
                     "--quick", "--model", "tiny-random", "--pool-limit", "40", "--limit-test", "5", "--tasks", "alpaca",
                     "--no-progress", *extra])

    assert bench(tmp_path / "b", "--first-seed", "1") == 0
    lane_b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["seed"] for r in lane_b["runs"]] == [1] and lane_b["stages"]["computed"]["select"] == 1
    assert bench(tmp_path / "a", "--reuse", str(tmp_path / "b" / "results.json")) == 0
    lane_a = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [r["seed"] for r in lane_a["runs"]] == [0, 1] and lane_a["stages"]["computed"]["select"] == 1
    assert lane_a["runs"][1]["eval"] == lane_b["runs"][0]["eval"] and lane_a["stages"]["cells_reused"] >= 1
    assert bench(tmp_path / "c", "--first-seed", "2") == 2  # past the last seed: a clear error
    assert not (tmp_path / "c" / "results.json").exists()
    # a row given more seeds by --method-seeds may start past --seeds
    assert bench(tmp_path / "d", "--first-seed", "2", "--method-seeds", "random=3") == 0
    assert [r["seed"] for r in json.loads((tmp_path / "d" / "results.json").read_text())["runs"]] == [2]


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


def test_clean_random_reference_row_never_selects_a_corrupted_row(tmp_path, suite):
    """clean-random reads the labels (a reference, not a method): every seed picks only clean
    lines, seeds differ, and the results mark the row as a reference."""
    out = tmp_path / "bench"
    assert main(["bench", "--suite", str(suite), "--out", str(out), "--methods", "clean-random,random", "--seeds", "3",
                 "--quick", "--model", "tiny-random", "--limit-test", "3", "--budget", "8", "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    labels = [json.loads(line)["label"] for line in (suite / "pool_labels.jsonl").read_text().splitlines()]
    picks = []
    for run in doc["runs"]:
        sel = json.loads(next((out / run["selection"]).glob("bench_selection.json")).read_text())
        if run["row"] == "clean-random":
            assert run["reference"] and len(sel["rows"]) == 8
            assert all(labels[r] == "clean" for r in sel["rows"])
            assert run["composition"]["labels"]["corrupted"] == 0.0
            picks.append(tuple(sel["rows"]))
        else:
            assert not run["reference"]
    assert len(picks) == 3 and len(set(picks)) == 3  # seeds differ
    s = doc["summary"]
    assert s["clean-random"]["reference"] and not s["random"]["reference"]
    assert s["clean-random"]["labels"]["corrupted"]["mean"] == 0.0
    md = (out / "results.md").read_text()
    assert "| clean-random (reference: reads the labels) | 3 seeds |" in md
    assert "calibration: clean-random beats random" in md and "**INCOMPLETE**" in md
    assert (out / "compute_vs_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clean_random_positions_known_answer():
    from types import SimpleNamespace

    from shedkit.errors import ShedkitError
    from shedkit.evaluate.bench_rows import clean_random_positions

    labels = [{"label": x} for x in ["clean", "truncated", "clean", "clean", "misaligned", "clean"]]
    records = [SimpleNamespace(index=i) for i in (0, 2, 3, 4, 5)]  # line 1 left out (e.g. an empty response)
    pos = clean_random_positions(records, labels, 4, seed=0)
    assert pos == [0, 1, 2, 4]  # all four clean records, never position 3 (line 4, misaligned)
    assert clean_random_positions(records, labels, 2, seed=5) == clean_random_positions(records, labels, 2, seed=5)
    with pytest.raises(ShedkitError):
        clean_random_positions(records, labels, 5, seed=0)
    with pytest.raises(ShedkitError):
        clean_random_positions(records, [], 1, seed=0)


def test_row_specs():
    from shedkit.errors import ShedkitError
    from shedkit.evaluate.bench_rows import default_rows, parse_row
    from shedkit.pipeline.methods import METHODS

    assert parse_row("lobass@0.06").method == "lobass" and parse_row("lobass@0.06").budget == 0.06
    assert parse_row("random@300").budget == 300 and parse_row("random").budget is None
    row = parse_row("dsir-per-token")
    assert row.method == "dsir" and row.options == {"dsir_normalize": True} and not row.reference
    assert parse_row("clean-random").reference
    less = parse_row("first-order-less")
    assert less.method == "first-order" and less.options == {"fo_normalize": "less", "fo_layers": 4}
    for bad in ("randon", "lobass@", "dq@-1"):
        with pytest.raises(ShedkitError):
            parse_row(bad)
    rows = default_rows()
    assert rows[:2] == ("random", "clean-random") and "lobass@0.06" in rows and "full" in rows
    # methods other branches add appear only when registered
    for name in ("lowest-loss", "ifd", "first-order", "shed-hybrid"):
        assert (name in rows) == (name in METHODS)
    cfg = BenchConfig(methods=("dsir-per-token", "lobass@0.06"), method_options={"dsir-per-token": {"top_k": True}})
    assert cfg.deterministic("dsir-per-token") and not cfg.deterministic("dsir") and cfg.seeds_for("lobass@0.06") == [0, 1, 2]


def test_registered_method_runs_without_bench_changes(tmp_path, suite, monkeypatch):
    """A method another branch registers (here: a stand-in module under another name) runs as a
    bench row, with its own budget, and results.json reuses its cell by content."""
    from shedkit.pipeline import methods

    monkeypatch.setitem(methods.METHODS, "lowest-loss", "random")  # any module with run(ctx)
    out = tmp_path / "bench"
    args = ["bench", "--suite", str(suite), "--out", str(out), "--methods", "lowest-loss@5", "--seeds", "1",
            "--quick", "--model", "tiny-random", "--limit-test", "3", "--no-progress"]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs"][0]["row"] == "lowest-loss@5" and doc["runs"][0]["rows"] == 5
    # a fresh output folder resumes from the first run's results.json alone
    out2 = tmp_path / "bench2"
    assert main(args[:4] + [str(out2)] + args[5:] + ["--reuse", str(out / "results.json")]) == 0
    doc2 = json.loads((out2 / "results.json").read_text())
    assert doc2["stages"]["computed"] == {"select": 0, "finetune": 0, "eval": 0} and doc2["stages"]["cells_reused"] == 2
    assert doc2["runs"][0]["eval"] == doc["runs"][0]["eval"] and doc2["cells"].keys() == doc["cells"].keys()
    # --cached-only computes nothing and lists what is missing
    assert main(args[:8] + ["2"] + args[9:] + ["--cached-only"]) == 0
    doc_c = json.loads((out / "results.json").read_text())
    assert doc_c["stages"]["computed"] == {"select": 0, "finetune": 0, "eval": 0}
    assert doc_c["missing_cells"] == ["lowest-loss@5 seed 1"] and len(doc_c["runs"]) == 1
    assert "not yet evaluated: lowest-loss@5 seed 1" in (out / "results.md").read_text()
    # another budget is another cell
    assert main(args[:6] + ["lowest-loss@6"] + args[7:]) == 0
    doc3 = json.loads((out / "results.json").read_text())
    assert doc3["stages"]["computed"]["select"] == 1 and len(doc3["cells"]) == 3


def _summary_doc(rows):
    """A results document with given alpaca_test losses per row: {row: [loss per seed]}."""
    import numpy as np

    summary = {}
    for row, losses in rows.items():
        sd = float(np.std(losses, ddof=1)) if len(losses) > 1 else None
        summary[row] = {"runs": len(losses), "deterministic": row == "full", "reference": row == "clean-random",
                        "tasks": {"alpaca_test": {"loss": {"mean": float(np.mean(losses)), "sd": sd, "n": len(losses)}}}}
    return {"summary": summary, "settings": {"limit_test": None}, "cells": {}, "pool_key": "p", "eval_keys": {"alpaca_test": "e"}}


def test_claims_known_answers():
    from shedkit.evaluate.bench_claims import claims, compare, missing_cells

    doc = _summary_doc({"random": [2.0, 2.1, 1.9], "clean-random": [1.5, 1.6, 1.4], "shed-qocs": [1.95, 2.05, 2.0],
                        "shed-qwcs": [1.98, 2.02, 2.0], "full": [1.99]})
    rows = {c[0]: c for c in claims(doc)}
    assert rows["calibration: clean-random beats random by > 2 sd"][3] == "yes"  # 0.5 apart, sd 0.1
    assert rows["SHED: 10% of the data matches or beats the full data"][3] == "yes (within noise)"  # best SHED vs full
    assert [c for c in claims(doc) if c[0].startswith("LoBaSS")][0][3] == "not measured"
    assert "lobass@0.06: not measured" in [c for c in claims(doc) if c[0].startswith("LoBaSS")][0][2]
    assert [c for c in claims(doc) if "QWCS" in c[0]][0][3] == "within noise"
    assert [c for c in claims(doc) if c[0].startswith("transfer")][0][3] == "not measured"
    assert compare(doc["summary"], "random", "clean-random")[1] == "no"
    thin = _summary_doc({"random": [2.0, 2.1], "clean-random": [1.5]})["summary"]
    assert compare(thin, "clean-random", "random")[1] == "yes — provisional: clean-random, random under 3 seeds"
    # Welch's t-test beside the rule: from the per-seed losses, where both rows have >= 2 seeds
    from scipy.stats import ttest_ind

    text = rows["calibration: clean-random beats random by > 2 sd"][2]
    p = ttest_ind([1.5, 1.6, 1.4], [2.0, 2.1, 1.9], equal_var=False).pvalue
    assert text.endswith(f"Welch p = {p:.2g}") and 0.001 < p < 0.01
    assert "Welch" not in rows["SHED: 10% of the data matches or beats the full data"][2]  # full: one run
    assert "Welch" not in compare(_summary_doc({"a": [1.0, 1.0], "b": [2.0, 2.0]})["summary"], "a", "b")[0]
    missing = missing_cells(doc, planned=("random", "clean-random", "dq", "full"))
    assert "dq: not run" in missing and not any(m.startswith(("random", "full", "clean-random")) for m in missing)


def test_transfer_claim_from_cells():
    """LoRA side: the run's own table; full side: cells of this run's recipe but for method and
    lr; cells of another recipe (an earlier calibration) or other test rows never mix in."""
    from shedkit.evaluate.bench_claims import missing_cells, transfer_claim

    lora_recipe = {"method": "lora", "epochs": 1.0, "lr": 1e-3, "max_length": 256}
    doc = _summary_doc({"random": [2.0, 2.0], "dq": [1.9, 1.9], "dsir": [2.1, 2.1], "full": [1.5]})
    doc["settings"]["recipe"] = lora_recipe

    def cell(name, row, loss, eval_key="e", **recipe):
        doc["cells"][name] = {"row": row, "pool": "p", "eval_keys": {"alpaca_test": eval_key},
                              "recipe": {**lora_recipe, **recipe}, "eval": {"alpaca_test": {"loss": loss}}}

    for row, loss in {"random": 1.8, "dq": 1.7, "dsir": 1.6}.items():
        cell(f"full-{row}", row, loss, method="full", lr=5e-5)
    cell("other-eval", "dq", 0.1, eval_key="x", method="full", lr=5e-5)  # other test rows: ignored
    cell("old-calibration", "random", 9.0, epochs=0.5)  # another LoRA recipe: not the table's
    cell("full-other-lr", "dq", 0.1, method="full", lr=1e-5)  # fewer rows at this lr: not used
    cell("full-longer", "random", 0.1, method="full", lr=5e-5, epochs=2.0)  # another recipe: ignored
    text, verdict = transfer_claim(doc)
    assert verdict == "no"
    assert "LoRA order dq < random < dsir" in text and "full-FT order dsir < dq < random (lr 5e-05)" in text
    doc["cells"]["full-dsir"]["eval"]["alpaca_test"]["loss"] = 1.9
    assert transfer_claim(doc)[1] == "yes"
    assert not any(m.startswith("transferability") for m in missing_cells(doc, planned=()))
    del doc["cells"]["full-dsir"]
    assert transfer_claim(doc)[1] == "not measured"
    assert any(m.startswith("transferability") for m in missing_cells(doc, planned=()))


def test_variant_options_win_over_the_plain_methods(tmp_path, suite):
    """--option shed-hybrid.x sets the plain shed-hybrid row; the shed-hybrid-filter variant keeps
    its own settings; --option shed-hybrid-filter.x overrides the variant."""
    from shedkit.evaluate.bench import Bench

    opts = {"shed-hybrid": {"row_score": "loss", "sampler": "qwcs"}, "shed-hybrid-filter": {"row_keep": 0.5}}
    bench = Bench(suite, tmp_path / "b", BenchConfig(methods=("shed-hybrid", "shed-hybrid-filter"), method_options=opts))
    plain, variant = bench.method_options("shed-hybrid"), bench.method_options("shed-hybrid-filter")
    assert plain["row_score"] == "loss" and "row_order" not in plain
    assert variant["row_score"] == "loss-ifd" and variant["row_order"] == "random" and variant["sampler"] == "qwcs"
    assert variant["row_keep"] == 0.5


def test_shed_target_names_one_dev_file_per_task(tmp_path, suite, write_jsonl):
    """--shed-target alpaca,lima: SHED's and first-order's target is one file per task (each cut
    to --shed-dev-limit rows); one name stays a single file, so existing cells keep their keys;
    a name the suite lacks is an error before anything runs."""
    import shutil

    from shedkit.errors import ShedkitError
    from shedkit.evaluate.bench import Bench

    shutil.copy(suite / "target_alpaca_dev.jsonl", suite / "target_lima_dev.jsonl")
    one = Bench(suite, tmp_path / "a", BenchConfig(methods=("first-order-less",), shed_dev_limit=3))
    one._load()
    assert isinstance(one.method_options("first-order-less")["target"], str)
    two = Bench(suite, tmp_path / "b", BenchConfig(methods=("first-order-less", "shed-qwcs"), shed_target="alpaca, lima",
                                                   shed_dev_limit=3))
    two._load()
    for row in ("first-order-less", "shed-qwcs"):
        files = two.method_options(row)["target"]
        assert [p.split("/")[-1] for p in files] == ["target_alpaca_dev.head3.jsonl", "target_lima_dev.head3.jsonl"]
        assert all(len(open(p).read().splitlines()) == 3 for p in files)
    with pytest.raises(ShedkitError, match="target_gsm8k_dev"):
        Bench(suite, tmp_path / "c", BenchConfig(methods=("first-order",), shed_target="alpaca,gsm8k"))


def test_a_method_version_rekeys_its_selections_only(tmp_path, suite, monkeypatch):
    """A method module's VERSION enters its selection key (a changed method recomputes its cells);
    methods that declare none key as before, so existing cells stay valid."""
    from shedkit.evaluate.bench import Bench
    from shedkit.pipeline.methods import method_module

    bench = Bench(suite, tmp_path / "b", BenchConfig(methods=("random", "dq")))
    bench._load()
    before = {m: bench.selection_key(m, 0) for m in ("random", "dq")}
    monkeypatch.setattr(method_module("dq"), "VERSION", "2", raising=False)
    v2 = bench.selection_key("dq", 0)
    assert v2 != before["dq"] and bench.selection_key("random", 0) == before["random"]
    monkeypatch.setattr(method_module("dq"), "VERSION", "3", raising=False)
    assert bench.selection_key("dq", 0) not in (before["dq"], v2)


def test_claims_answer_the_benchmark_questions():
    """The claims table opens with the issue's questions: shedkit's best selection against random
    and against the best plain filter (each the best row present, said to be picked on the test)."""
    from shedkit.evaluate.bench_claims import claims

    doc = _summary_doc({"random": [2.0, 2.02, 1.98], "clean-random": [1.8, 1.81, 1.79], "lowest-loss": [2.3],
                        "filtered-random": [1.93, 1.95, 1.94], "shed-qwcs": [1.99, 2.0, 2.01],
                        "shed-hybrid-filter": [1.90, 1.91, 1.89], "full": [1.85]})
    rows = {c[0].split(" (")[0]: c for c in claims(doc)}
    beat_random = rows["shedkit's best selection beats a random subset of the same size"]
    assert beat_random[3] == "yes" and beat_random[2].startswith("shed-hybrid-filter 1.9000") and "optimistic" in beat_random[2]
    beat_filter = rows["shedkit's best selection beats the best plain filter"]
    assert "vs filtered-random 1.9400" in beat_filter[2] and beat_filter[3] == "yes"
    assert "shed-hybrid-filter" in rows["SHED: 10% of the data matches or beats the full data"][2]


def test_cached_only_reports_cells_evaluated_on_some_tasks(tmp_path, suite):
    """A cell evaluated on the Alpaca target only, reported with --tasks alpaca,arc_easy and
    --cached-only: its Alpaca figures stay in the table, the ARC evaluation is listed as missing;
    two results files holding different tasks of one cell are merged, not overwritten."""
    common = ["bench", "--suite", str(suite), "--methods", "random@4", "--seeds", "1", "--quick", "--model", "tiny-random",
              "--pool-limit", "40", "--limit-test", "5", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(common + ["--out", str(a), "--tasks", "alpaca"]) == 0
    assert main(common + ["--out", str(b), "--tasks", "arc_easy"]) == 0
    report = tmp_path / "report"
    assert main(common + ["--out", str(report), "--tasks", "alpaca,arc_easy", "--cached-only",
                          "--reuse", str(a / "results.json")]) == 0
    doc = json.loads((report / "results.json").read_text())
    assert doc["missing_cells"] == ["base (arc_easy_test)", "random@4 seed 0 (arc_easy_test)"]
    assert doc["summary"]["random@4"]["tasks"]["alpaca_test"]["loss"]["n"] == 1
    assert main(common + ["--out", str(report), "--tasks", "alpaca,arc_easy", "--cached-only",
                          "--reuse", str(a / "results.json"), "--reuse", str(b / "results.json")]) == 0
    doc = json.loads((report / "results.json").read_text())
    assert doc["missing_cells"] == [] and set(doc["runs"][0]["eval"]) == {"alpaca_test", "arc_easy_test"}
