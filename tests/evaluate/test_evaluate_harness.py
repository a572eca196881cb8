"""`shedkit eval`: acc/acc_norm against a hand computation with the model's forward pass, the
table and metrics.json, MMLU files, and agreement with lm-evaluation-harness."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from shedkit.cli.main import main
from shedkit.evaluate import evaluate_model, load_task
from shedkit.models import ScoreConfig, load_model

FP32 = ScoreConfig(precision="fp32")


def hand_loglik(model, tok, context: str, continuation: str) -> float:
    """Independent of the scorer: one forward pass over context + continuation (the tiny
    tokenizer is one token per byte, so the split is exact), summing the continuation's log-probs."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    assert len(ctx) == len(context.encode()) and len(cont) == len(continuation.encode())
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
    return sum(logp[len(ctx) + j - 1, t].item() for j, t in enumerate(cont))


def expected_acc(model, tok, rows, context_of):
    lls = [np.array([hand_loglik(model, tok, context_of(r), " " + c) for c in r["choices"]]) for r in rows]
    acc = np.mean([np.argmax(ll) == r["gold"] for ll, r in zip(lls, rows)])
    norm = np.mean([np.argmax(ll / [len(c) for c in r["choices"]]) == r["gold"] for ll, r in zip(lls, rows)])
    return float(acc), float(norm), lls


def test_acc_and_acc_norm_match_a_hand_computation(tmp_path, write_jsonl, mc_rows):
    model, tok = load_model("tiny-random")
    acc, norm, _ = expected_acc(model, tok, mc_rows, lambda r: r["query"] + "\nAnswer:")
    path = write_jsonl(tmp_path / "target_arc_test.jsonl", mc_rows)
    doc = evaluate_model("tiny-random", [load_task(path)], score_config=FP32, progress=False)
    got = doc["tasks"]["arc_test"]
    assert got["kind"] == "mc" and got["n"] == 3
    assert got["acc"] == pytest.approx(acc) and got["acc_norm"] == pytest.approx(norm)


def test_cli_eval_prints_a_table_and_writes_metrics(tmp_path, write_jsonl, mc_rows, alpaca_rows, capsys):
    mc = write_jsonl(tmp_path / "target_arc_test.jsonl", mc_rows)
    loss = write_jsonl(tmp_path / "target_alpaca_test.jsonl", alpaca_rows[:6])
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    (mmlu / "anatomy_test.csv").write_text("question,choice0,choice1,choice2,choice3,answer\nWhich bone?,femur,ulna,rib,skull,0\nOrgan?,lung,heart,liver,skin,1\n")
    out = tmp_path / "ev"
    code = main(["eval", "--model", "tiny-random", "--task", str(mc), "--task", str(loss), "--task", str(mmlu),
                 "--out", str(out), "--precision", "fp32", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "arc_test" in printed and "alpaca_test" in printed and "mmlu" in printed and "acc_norm" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["tasks"]) == {"arc_test", "alpaca_test", "mmlu"}
    assert doc["tasks"]["alpaca_test"]["kind"] == "loss" and doc["tasks"]["alpaca_test"]["n_rows"] == 6
    assert doc["tasks"]["alpaca_test"]["loss"] > 0
    assert doc["tasks"]["mmlu"]["subtasks"]["anatomy_test"]["n"] == 2
    assert doc["environment"]["packages"]["torch"] and doc["model_identity"].startswith("tiny-random")
    # MMLU: the letters after lm-eval's prompt, scored by hand
    model, tok = load_model("tiny-random")
    items = load_task(mmlu).dev.items
    rows = [{"query": i.query, "choices": list(i.choices), "gold": i.gold} for i in items]
    acc, norm, _ = expected_acc(model, tok, rows, lambda r: r["query"])
    assert doc["tasks"]["mmlu"]["acc"] == pytest.approx(acc) and norm == acc  # one-letter choices: acc_norm == acc
    assert main(["eval", "--model", "tiny-random", "--task", str(mc), "--harness", "lm-evl"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                    reason="lm-evaluation-harness is not installed (pip install 'shedkit[eval]')")
def test_lm_eval_harness_gives_the_same_acc(tmp_path, write_jsonl, mc_rows, alpaca_rows):
    rows = mc_rows + [
        {"query": "Question: What is frozen water?", "choices": ["ice", "steam", "sand"], "gold": 0},
        {"query": "Question: Which is a number?", "choices": ["seven", "blue", "quickly", "tree"], "gold": 0},
    ]
    mc = write_jsonl(tmp_path / "target_arc_test.jsonl", rows)
    mmlu = tmp_path / "anatomy_test.csv"
    mmlu.write_text("question,choice0,choice1,choice2,choice3,answer\nWhich bone?,femur,ulna,rib,skull,0\nOrgan?,lung,heart,liver,skin,1\n")
    loss = write_jsonl(tmp_path / "target_alpaca_test.jsonl", alpaca_rows[:3])
    tasks = [load_task(mc), load_task(mmlu), load_task(loss)]
    ours = evaluate_model("tiny-random", tasks, score_config=FP32, progress=False)["tasks"]
    theirs = evaluate_model("tiny-random", tasks, score_config=FP32, harness="lm-eval", progress=False)["tasks"]
    for name in ("arc_test", "anatomy_test"):
        assert theirs[name]["acc"] == pytest.approx(ours[name]["acc"]), name
        assert theirs[name]["acc_norm"] == pytest.approx(ours[name]["acc_norm"]), name
    assert theirs["alpaca_test"]["kind"] == "skipped"
