"""--train-on, --chat-template and --template reach the encoder from the commands that score or
train: `shedkit score` counts exactly the tokens the encoder marks; `select --method lobass`
carries them into its reference fine-tune and scoring configs."""

import csv
import json

import pytest

from shedkit.cli.main import main

JINJA = ("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if m.role == 'assistant' %}</s>{% endif %}\n"
         "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")


@pytest.fixture
def multi_turn(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "first " * (i + 1)},
                          {"role": "user", "content": "and?"}, {"role": "assistant", "content": f"last {i}"}]}
            for i in range(8)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = tmp_path / "template.jinja"
    template.write_text(JINJA)
    return pool, template


def test_score_counts_the_tokens_the_flags_select(tmp_path, multi_turn):
    from shedkit.data.pool import load_pool
    from shedkit.models import load_model
    from shedkit.models.encode import encode_record

    pool, template = multi_turn
    _, tok = load_model("tiny-random")
    records = load_pool(pool).records
    for flags, kw in ([], {}), (["--train-on", "last"], {"train_on": "last"}), \
            (["--train-on", "last", "--chat-template", str(template)], {"train_on": "last", "chat_template": JINJA}):
        out = tmp_path / f"score-{len(flags)}"
        assert main(["score", str(pool), "--model", "tiny-random", "--precision", "fp32", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), *flags]) == 0
        got = [int(r["n_tokens"]) for r in csv.DictReader(open(out / "scores.csv"))]
        assert got == [encode_record(tok, r, 1024, **kw).n_targets for r in records], flags
    # "last" counts the last answer only: fewer tokens than "all" on every row
    all_, last = ([int(r["n_tokens"]) for r in csv.DictReader(open(tmp_path / f"score-{n}" / "scores.csv"))] for n in (0, 2))
    assert all(a > b for a, b in zip(all_, last))


def test_select_lobass_carries_the_encoding_settings(tmp_path, multi_turn):
    pool, template = multi_turn
    out = tmp_path / "run"
    assert main(["select", str(pool), "--method", "lobass", "--budget", "3", "--model", "tiny-random",
                 "--max-length", "64", "--precision", "fp32", "--epochs", "0.5", "--train-on", "last",
                 "--chat-template", str(template), "--template", "chat", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["method"]["reference"]["train_config"]
    score = manifest["method"]["score_config"]
    for cfg in (train, score):
        assert cfg["train_on"] == "last" and cfg["chat_template"] == JINJA and cfg["template"] == "chat"
    assert main(["select", str(pool), "--method", "lobass", "--budget", "3", "--model", "tiny-random",
                 "--train-on", "first", "--out", str(tmp_path / "bad")]) == 2
