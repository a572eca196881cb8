"""--method lowest-loss and --method ifd on the tiny model; IFD's denominator has no template
around the response (no default system prompt, no assistant header)."""

import csv
import json

import numpy as np
import pytest

import shedkit
from shedkit.data.records import Turn, make_record
from shedkit.data.synthetic import write_demo_data

SETTINGS = dict(model="tiny-random", max_length=64, precision="fp32", progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("filters-data"), n=30, seed=6, dev_rows=4)


def read(out):
    return list(csv.DictReader(open(out / "scores.csv"))), json.loads((out / "manifest.json").read_text())


def top(scores, n):
    return sorted(np.lexsort((np.arange(len(scores)), -np.asarray(scores)))[:n].tolist())


def test_lowest_loss(tmp_path, data):
    sel = shedkit.select(data["pool"], method="lowest-loss", budget=5, cache_dir=tmp_path / "c", out=tmp_path / "o", **SETTINGS)
    scores, _ = read(tmp_path / "o")
    loss = np.array([float(r["loss_base"]) for r in scores])
    assert sel.rows == top(-loss, 5)


def test_ifd_low_high_and_cherrys_rule(tmp_path, data):
    kw = dict(method="ifd", budget=5, cache_dir=tmp_path / "c", **SETTINGS)
    low = shedkit.select(data["pool"], out=tmp_path / "low", **kw)
    scores, manifest = read(tmp_path / "low")
    loss = np.array([float(r["loss_base"]) for r in scores])
    alone = np.array([float(r["loss_alone"]) for r in scores])
    ifd = np.array([float(r["ifd"]) for r in scores])
    np.testing.assert_allclose(ifd, loss / alone, rtol=1e-12)
    assert low.rows == top(-ifd, 5) and manifest["method"]["response_alone"]["computed"] == 30
    high = shedkit.select(data["pool"], out=tmp_path / "high", ifd_order="high", **kw)
    assert high.rows == top(ifd, 5) and read(tmp_path / "high")[1]["method"]["response_alone"]["computed"] == 0
    if np.sum(ifd < 1) >= 5:
        cherry = shedkit.select(data["pool"], out=tmp_path / "cherry", ifd_order="high", ifd_drop_ge1=True, **kw)
        assert cherry.rows == top(np.where(ifd < 1, ifd, -np.inf), 5)
        s3, _ = read(tmp_path / "cherry")
        assert all(r["excluded"] == "ifd>=1" for r, v in zip(s3, ifd) if v >= 1)


def test_response_alone_has_no_template_around_it():
    from shedkit.models.tiny import byte_tokenizer
    from shedkit.pipeline.row_scores import encode_response_plain

    tok = byte_tokenizer()
    tok.chat_template = (  # SmolLM2-style: a default system prompt when the conversation has none
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    rec = make_record(0, [Turn("user", "Add 2 and 2."), Turn("assistant", "4")], {})
    enc = encode_response_plain(tok, rec, 64)
    assert tok.decode(enc.ids[1:]) == "4<|im_end|>"
    assert enc.groups.tolist() == [0] + [1] * (len(enc.ids) - 1)


def test_response_alone_pass_resumes_per_shard(tmp_path, data, monkeypatch):
    # A run that dies in the third shard keeps the first two in the cache; the rerun scores only
    # the rest, and its numbers equal an uninterrupted run's.
    import shedkit.models.scoring as scoring

    kw = dict(method="ifd", budget=5, shard_size=8, **SETTINGS)
    real, calls = scoring.token_logprobs, []

    def dies_on_third_shard(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    shedkit.select(data["pool"], cache_dir=tmp_path / "c", out=tmp_path / "warm-up", method="lowest-loss",
                   budget=5, shard_size=8, **SETTINGS)  # the base losses, so only the IFD pass is interrupted
    monkeypatch.setattr(scoring, "token_logprobs", dies_on_third_shard)
    with pytest.raises(RuntimeError, match="killed"):
        shedkit.select(data["pool"], cache_dir=tmp_path / "c", out=tmp_path / "dies", **kw)
    assert calls[:2] == [8, 8]
    monkeypatch.setattr(scoring, "token_logprobs", real)
    resumed = shedkit.select(data["pool"], cache_dir=tmp_path / "c", out=tmp_path / "resumed", **kw)
    assert read(tmp_path / "resumed")[1]["method"]["response_alone"]["computed"] == 30 - 16
    fresh = shedkit.select(data["pool"], cache_dir=tmp_path / "c2", out=tmp_path / "fresh", **kw)
    assert resumed.rows == fresh.rows
    assert [r["loss_alone"] for r in read(tmp_path / "resumed")[0]] == [r["loss_alone"] for r in read(tmp_path / "fresh")[0]]
