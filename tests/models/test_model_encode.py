import numpy as np

from shedkit.models.encode import encode_continuation, encode_record, encode_response_alone, render, truncate

from conftest import rec


def targets_text(tok, enc, group=None):
    sel = enc.groups > 0 if group is None else enc.groups == group
    return tok.decode(enc.ids[sel].tolist())


def test_only_response_tokens_are_targets(tiny):
    _, tok = tiny
    r = rec(0, ("user", "What is two plus two?"), ("assistant", "Four."))
    enc = encode_record(tok, r, 512)
    assert targets_text(tok, enc) == "Four.<|im_end|>"
    assert tok.decode(enc.ids.tolist()).startswith("<|im_start|>user\nWhat is two plus two?")
    assert enc.n_targets == len("Four.") + 1


def test_multi_turn_marks_every_assistant_turn(tiny):
    _, tok = tiny
    r = rec(0, ("system", "S"), ("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2!"))
    enc = encode_record(tok, r, 512)
    assert targets_text(tok, enc, 1) == "a1<|im_end|>"
    assert targets_text(tok, enc, 2) == "a2!<|im_end|>"
    alone = encode_response_alone(tok, r, 512)
    assert tok.decode(alone.ids.tolist()) == "<|im_start|>assistant\na2!<|im_end|>\n"
    assert targets_text(tok, alone) == "a2!<|im_end|>"


def test_plain_template_when_asked_or_absent(tiny):
    _, tok = tiny
    r = rec(0, ("user", "Hi"), ("assistant", "Yo"))
    text, spans = render(tok, r.turns, "plain")
    assert text == "### User:\nHi\n\n### Assistant:\nYo<|im_end|>\n\n"
    assert [text[s:e] for s, e in spans] == ["Yo<|im_end|>"]
    enc = encode_record(tok, r, 512, "plain")
    assert targets_text(tok, enc) == "Yo<|im_end|>"


def test_truncation_keeps_the_response_and_a_prompt_tail(tiny):
    _, tok = tiny
    r = rec(0, ("user", "x" * 300 + "END?"), ("assistant", "short answer"))
    full = encode_record(tok, r, 10_000)
    enc = encode_record(tok, r, 100)
    assert len(enc) == 100
    assert targets_text(tok, enc) == "short answer<|im_end|>"
    assert "END?" in tok.decode(enc.ids.tolist())  # the end of the prompt stays
    assert enc.n_targets == full.n_targets
    # a response longer than the window keeps a quarter for the prompt and is cut on the right
    long = rec(1, ("user", "q" * 50), ("assistant", "r" * 400))
    enc = encode_record(tok, long, 100)
    assert len(enc) == 100 and (enc.groups == 0).sum() == 25
    assert targets_text(tok, enc) == "r" * 75


def test_truncate_never_marks_the_first_token():
    enc = truncate(np.arange(5), np.array([1, 1, 1, 0, 0], dtype=np.int16), 3)
    assert enc.groups[0] == 0


def test_continuation_follows_lm_eval(tiny):
    _, tok = tiny
    a = encode_continuation(tok, "Question: x?\nAnswer:", " yes", 512)
    b = encode_continuation(tok, "Question: x?\nAnswer: ", "yes", 512)  # trailing space moves over
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.groups, b.groups)
    assert tok.decode(a.ids[a.groups > 0].tolist()) == " yes"
    short = encode_continuation(tok, "c" * 50, " yes", 10)
    assert len(short) == 10 and short.n_targets == 4
