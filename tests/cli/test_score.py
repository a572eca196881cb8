"""`shedkit score`: per-row losses equal the model layer's response_losses; bad input exits 2."""

import csv
import json

import numpy as np
import pytest

from shedkit.cli.main import main
from shedkit.data.synthetic import make_pool


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def pool(tmp_path):
    rows, _ = make_pool(12, seed=4)
    rows[5]["output"] = ""  # an empty response: an error unless --skip-empty
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_matches_response_losses_and_reuses_the_cache(tmp_path, pool):
    from shedkit.data.pool import load_pool
    from shedkit.models import ScoreConfig, load_model, response_losses

    out = tmp_path / "out"
    args = ["score", str(pool), "--model", "tiny-random", "--out", str(out), "--ifd", "--skip-empty",
            "--max-length", "64", "--precision", "fp32", "--batch-size", "4", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert list(rows[0]) == ["row", "id", "loss", "n_tokens", "ifd"]
    assert [int(r["row"]) for r in rows] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]  # row 5 left out

    records = load_pool(pool, skip_empty=True).records
    model, tok = load_model("tiny-random")
    want = response_losses(model, tok, records, ScoreConfig(max_length=64, precision="fp32"), ifd=True, progress=False)
    assert [r["id"] for r in rows] == want.ids
    np.testing.assert_allclose([float(r["loss"]) for r in rows], want.loss, rtol=1e-6)
    np.testing.assert_allclose([float(r["ifd"]) for r in rows], want.ifd, rtol=1e-6)
    assert [int(r["n_tokens"]) for r in rows] == want.n_tokens.tolist()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"records": 11, "scored": 11, "skipped_rows": 0, "computed": 11, "cached": 0}
    assert manifest["pool"]["skipped_empty"] == [5] and manifest["model"] == "tiny-random"
    assert manifest["score_config"]["max_length"] == 64 and manifest["environment"]["python"]

    # a rerun reads every loss from the cache and writes the same table
    before = (out / "scores.csv").read_bytes()
    assert main(args) == 0
    again = json.loads((out / "manifest.json").read_text())
    assert again["counts"]["computed"] == 0 and again["counts"]["cached"] == 11
    assert (out / "scores.csv").read_bytes() == before


def test_score_on_a_process_pool_equals_the_default_run(tmp_path, pool):
    common = ["score", str(pool), "--model", "tiny-random", "--ifd", "--skip-empty", "--max-length", "64",
              "--precision", "fp32", "--batch-size", "4"]
    assert main([*common, "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "ca")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cb"),
                 "--backend", "process", "--workers", "2", "--shard-size", "8"]) == 0
    assert (tmp_path / "b" / "scores.csv").read_bytes() == (tmp_path / "a" / "scores.csv").read_bytes()
    default, sharded = (json.loads((tmp_path / o / "manifest.json").read_text()) for o in ("a", "b"))
    assert sharded["counts"] == default["counts"] and sharded["counts"]["computed"] == 11
    assert sharded["execution"] == {"backend": "process", "workers": 2, "shard_size": 8}
    assert "execution" not in default  # a default run's manifest is as before
    # one cache part per shard (11 records in windows of 8 positions), under the default run's key
    (key_a,), (key_b,) = ([d.name for d in (tmp_path / c / "losses").iterdir()] for c in ("ca", "cb"))
    assert key_a == key_b and len(list((tmp_path / "cb" / "losses" / key_b).glob("part-*.jsonl"))) == 2


def test_score_without_ifd_has_no_ifd_column(tmp_path, pool):
    out = tmp_path / "plain"
    assert main(["score", str(pool), "--model", "tiny-random", "--out", str(out), "--skip-empty",
                 "--max-length", "64", "--cache-dir", str(tmp_path / "cache")]) == 0
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert header == "row,id,loss,n_tokens"


def test_score_bad_input_exits_2(tmp_path, pool, capsys):
    cases = [
        ["score", str(tmp_path / "missing.jsonl"), "--model", "tiny-random"],
        ["score", str(pool), "--model", "tiny-random"],  # the empty response without --skip-empty
        ["score", str(pool), "--model", "tiny-random", "--skip-empty", "--precision", "fp8"],
        ["score", str(pool), "--model", "tiny-random", "--skip-empty", "--max-length", "0"],
        ["score", str(pool), "--model", str(tmp_path / "no-model"), "--skip-empty"],
    ]
    for i, args in enumerate(cases):
        out = tmp_path / f"o{i}"
        assert main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 2, args
        assert "error:" in capsys.readouterr().err
        assert not out.exists()
    (tmp_path / "file").write_text("x")
    assert main(["score", str(pool), "--model", "tiny-random", "--skip-empty", "--out", str(tmp_path / "file")]) == 2
