"""Multiple-choice log-likelihoods equal lm-evaluation-harness's own, item by item: contexts
ending in newlines (all trailing whitespace moves to the continuation) and an item longer than
max_length (lm-eval keeps max_length + 1 tokens and feeds all but the last)."""

import numpy as np
import pytest

from shedkit.models import ScoreConfig, load_model
from shedkit.models.objectives import MCItem, mc_accuracy, mc_context, mc_loglikelihoods

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'shedkit[eval]')")

MAX_LENGTH = 48
ITEMS = [
    MCItem("Question: what is two plus two?\n", ("four", "five", "twenty two"), 0),
    MCItem("Question: pick the colour of the sky\n\n", ("blue", "green"), 0),
    MCItem("Complete: the cat sat on the \n \t", ("mat", "moon"), 0),
    MCItem("Question: " + "a very long preamble that goes on " * 6 + "so which?", ("this one", "that"), 1),
    MCItem("Question: no trailing space", ("yes", "no"), 1),
]


def lm_eval_loglikelihoods(model, tok, items):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, max_length=MAX_LENGTH, batch_size=1, device="cpu")
    requests = [Instance("loglikelihood", {}, (mc_context(it.query), " " + c), idx)
                for it in items for idx, c in enumerate(it.choices)]
    lls = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    out, k = [], 0
    for it in items:
        out.append(np.array(lls[k: k + len(it.choices)]))
        k += len(it.choices)
    return out


def test_mc_loglikelihoods_equal_lm_eval_on_trailing_newlines_and_an_over_long_item():
    model, tok = load_model("tiny-random")
    long_ids = tok(mc_context(ITEMS[3].query) + " this one", add_special_tokens=False)["input_ids"]
    assert len(long_ids) > MAX_LENGTH + 1  # the long item is truncated
    config = ScoreConfig(precision="fp32", max_length=MAX_LENGTH, batch_size=1)
    ours = mc_loglikelihoods(model, tok, ITEMS, config)
    theirs = lm_eval_loglikelihoods(model, tok, ITEMS)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    acc = mc_accuracy(model, tok, ITEMS, config)["acc"]
    assert acc == np.mean([float(np.argmax(b) == it.gold) for b, it in zip(theirs, ITEMS)])
