import json

import numpy as np
import pytest
import torch

from shedkit.errors import InputError, ShedkitError
from shedkit.models import DevSet, MCItem, Objective, ScoreConfig, evaluate, read_dev
from shedkit.models.objectives import dev_loss, mc_accuracy, mc_context

from helpers import rec

ITEMS = [
    MCItem("Question: Which is a colour?", ("red", "a table", "seventeen"), 0),
    MCItem("Question: Which one can fly?", ("a bird", "stone"), 0),
    MCItem("Question: Pick the tool.\nAnswer:", ("hammer", "cloud", "rain on a very long afternoon"), 2),
]


def hand_loglik(model, tok, context, continuation):
    """Independent: bytes of the context and of the continuation, one full forward, sum the
    log-probs of the continuation's tokens (the tiny tokenizer is one token per byte)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    assert len(ctx) == len(context.encode()) and len(cont) == len(continuation.encode())
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logp[len(ctx) + j - 1, t].item() for j, t in enumerate(cont))


def test_mc_accuracy_matches_hand_computation(tiny):
    model, tok = tiny
    contexts = ["Question: Which is a colour?\nAnswer:", "Question: Which one can fly?\nAnswer:", "Question: Pick the tool.\nAnswer:"]
    expected_ll = [[hand_loglik(model, tok, c, " " + ch) for ch in it.choices] for c, it in zip(contexts, ITEMS)]
    acc = np.mean([np.argmax(ll) == it.gold for ll, it in zip(expected_ll, ITEMS)])
    acc_norm = np.mean([np.argmax(np.array(ll) / [len(ch) for ch in it.choices]) == it.gold for ll, it in zip(expected_ll, ITEMS)])
    got = mc_accuracy(model, tok, ITEMS, ScoreConfig(precision="fp32", batch_size=3))
    for ll, exp in zip(got["loglikelihoods"], expected_ll):
        np.testing.assert_allclose(ll, exp, atol=1e-4)
    assert got["acc"] == pytest.approx(acc) and got["acc_norm"] == pytest.approx(acc_norm)
    assert got["n"] == 3
    res = evaluate(model, tok, ITEMS, Objective("mc-accuracy", mc_metric="acc_norm", score=ScoreConfig(precision="fp32")))
    assert res.objective == "mc-accuracy" and res.score == pytest.approx(acc_norm)


def test_mc_context_suffix():
    assert mc_context("Question: Why?") == "Question: Why?\nAnswer:"
    assert mc_context("Question: Why?\nAnswer:") == "Question: Why?\nAnswer:"
    assert mc_context("Complete: the sky is") == "Complete: the sky is"
    assert mc_context("Q: x", query_suffix="\nA:") == "Q: x\nA:"


def test_loss_objective_is_minus_token_weighted_loss(tiny, rows):
    model, tok = tiny
    cfg = ScoreConfig(precision="fp32")
    metrics = dev_loss(model, tok, rows, cfg)
    from shedkit.models import response_losses

    per_row = response_losses(model, tok, rows, cfg, progress=False)
    expected = float((per_row.loss * per_row.n_tokens).sum() / per_row.n_tokens.sum())
    assert metrics["loss"] == pytest.approx(expected, abs=1e-9)
    assert metrics["row_mean_loss"] == pytest.approx(per_row.loss.mean(), abs=1e-9)
    res = evaluate(model, tok, rows, Objective("auto", score=cfg))  # pinned: "auto" precision is bf16 on AMX CPUs
    assert res.objective == "loss" and res.score == pytest.approx(-metrics["loss"], abs=1e-6)


def test_read_dev_detects_the_objective(tmp_path):
    alpaca = tmp_path / "alpaca_dev.jsonl"
    alpaca.write_text("\n".join(json.dumps({"instruction": f"Say {i}", "input": "", "output": str(i)}) for i in range(3)) + "\n")
    mc = tmp_path / "mc_dev.jsonl"
    mc.write_text("\n".join(json.dumps({"query": f"Question: {i}?", "choices": ["a", "b"], "gold": i % 2}) for i in range(4)) + "\n")
    a, m = read_dev(alpaca), read_dev(mc)
    assert a.kind == "records" and a.default_objective == "loss" and len(a) == 3
    assert m.kind == "mc" and m.default_objective == "mc-accuracy" and m.items[1] == MCItem("Question: 1?", ("a", "b"), 1)
    assert a.fingerprint() != m.fingerprint() and read_dev(mc).fingerprint() == m.fingerprint()
    with pytest.raises(ShedkitError, match="mc-accuracy"):
        Objective("mc-accuracy").resolve(a)
    with pytest.raises(ShedkitError, match="did you mean 'mc-accuracy'"):
        Objective("mc-acuracy")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}) + "\n" + json.dumps({"query": "q", "choices": ["a"], "gold": 0}) + "\n")
    with pytest.raises(InputError, match="line 2"):
        read_dev(bad)


def test_dev_rows_with_empty_responses_are_an_error(tiny):
    model, tok = tiny
    with pytest.raises(ShedkitError, match="empty response"):
        dev_loss(model, tok, [rec(0, ("user", "q"), ("assistant", ""))])


def test_devset_of_accepts_dicts():
    dev = DevSet.of([{"query": "q", "choices": ["x", "y"], "gold": 1}])
    assert dev.items == (MCItem("q", ("x", "y"), 1),)
