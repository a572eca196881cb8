import numpy as np

from shedkit.models.encode import encode_continuation, encode_record, encode_response_alone, render, truncate

from helpers import rec


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


THREE_TURNS = (("system", "S"), ("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2"),
               ("user", "u3"), ("assistant", "a3!"))


def test_train_on_last_masks_earlier_assistant_turns(tiny):
    _, tok = tiny
    r = rec(0, *THREE_TURNS)
    every = encode_record(tok, r, 512)
    last = encode_record(tok, r, 512, train_on="last")
    assert np.array_equal(every.ids, last.ids)  # same tokens, only the marks differ
    assert [targets_text(tok, every, k) for k in (1, 2, 3)] == ["a1<|im_end|>", "a2<|im_end|>", "a3!<|im_end|>"]
    assert set(np.unique(last.groups)) == {0, 1}
    assert targets_text(tok, last) == "a3!<|im_end|>"
    # the last turn's marks are exactly those of "all"'s third turn
    assert np.array_equal(last.groups > 0, every.groups == 3)
    plain = encode_record(tok, r, 512, "plain", train_on="last")
    assert targets_text(tok, plain) == "a3!<|im_end|>"
    single = rec(1, ("user", "q"), ("assistant", "a"))
    assert np.array_equal(encode_record(tok, single, 512, train_on="last").groups, encode_record(tok, single, 512).groups)


def test_tool_turns_are_context(tiny):
    _, tok = tiny
    r = rec(0, ("user", "Weather?"), ("assistant", '[{"name": "weather"}]'), ("tool", "3 C, rain"), ("assistant", "Rainy, 3 C."))
    enc = encode_record(tok, r, 512)
    text = tok.decode(enc.ids.tolist())
    assert "<|im_start|>tool\n3 C, rain<|im_end|>" in text
    assert targets_text(tok, enc) == '[{"name": "weather"}]<|im_end|>Rainy, 3 C.<|im_end|>'
    plain_text, spans = render(tok, r.turns, "plain")
    assert "### Tool:\n3 C, rain\n\n" in plain_text
    assert [plain_text[s:e] for s, e in spans] == ['[{"name": "weather"}]<|im_end|>', "Rainy, 3 C.<|im_end|>"]


JINJA = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.role == 'assistant' %}</s>{% endif %}\n{% endfor %}"
         "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_custom_chat_template_is_rendered_as_transformers_does(tiny):
    _, tok = tiny
    r = rec(0, ("user", "Hi"), ("assistant", "Yo"), ("user", "Again"), ("assistant", "Yo yo"))
    text, spans = render(tok, r.turns, chat_template=JINJA)
    assert text == tok.apply_chat_template([{"role": t.role, "content": t.content} for t in r.turns],
                                           tokenize=False, chat_template=JINJA)
    assert text == "<user>Hi<assistant>Yo</s><user>Again<assistant>Yo yo</s>"  # trim_blocks, as transformers
    assert [text[s:e] for s, e in spans] == ["Yo</s>", "Yo yo</s>"]
    enc = encode_record(tok, r, 512, "plain", chat_template=JINJA)  # the given template wins
    assert targets_text(tok, enc, 1) == "Yo</s>" and targets_text(tok, enc, 2) == "Yo yo</s>"


def test_broken_chat_template_is_a_clear_error(tiny):
    import pytest

    from shedkit.errors import ShedkitError

    _, tok = tiny
    with pytest.raises(ShedkitError, match="chat template failed"):
        render(tok, rec(0, ("user", "a"), ("assistant", "b")).turns, chat_template="{% for m in messages %}")


def test_encode_options_come_from_the_configs():
    from shedkit.models.config import ScoreConfig, TrainConfig
    from shedkit.models.encode import encode_options

    assert encode_options(TrainConfig()) == {"template": "auto", "train_on": "all", "chat_template": None}
    cfg = ScoreConfig(train_on="last", chat_template=JINJA)
    assert encode_options(cfg) == {"template": "auto", "train_on": "last", "chat_template": JINJA}
    # defaults stay out of the dict that cache keys hash, so existing caches stay valid
    assert "train_on" not in TrainConfig().to_dict() and TrainConfig(train_on="last").to_dict()["train_on"] == "last"
