"""--method first-order end to end on the tiny model: top rows by value, columns, guards and
quotas, a rerun computes no gradient; the CLI flags."""

import csv
import json

import numpy as np
import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data

SETTINGS = dict(model="tiny-random", max_length=64, precision="fp32", progress=False, lora_r=4, batch_size=4,
                fo_warmup=8, fo_checkpoints=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    paths = write_demo_data(tmp_path_factory.mktemp("fo-data"), n=40, seed=5, dev_rows=6)
    return paths


def read(out):
    return list(csv.DictReader(open(out / "scores.csv"))), json.loads((out / "manifest.json").read_text())


def test_first_order_top_rows_and_rerun_computes_nothing(tmp_path, data):
    kw = dict(method="first-order", budget=7, target=[data["target_dev"]], cache_dir=tmp_path / "cache", **SETTINGS)
    first = shedkit.select(data["pool"], out=tmp_path / "a", **kw)
    scores, manifest = read(tmp_path / "a")
    values = np.array([float(r["first_order"]) for r in scores])
    assert {"first_order_raw", "first_order_cosine", "response_tokens", "excluded"} <= set(scores[0])
    np.testing.assert_array_equal(values, [float(r["first_order_raw"]) for r in scores])
    top = sorted(np.lexsort((np.arange(40), -values))[:7].tolist())
    assert first.rows == top == [int(r["row"]) for r in scores if r["selected"] == "1"]
    info = manifest["method"]
    assert info["row_gradients_computed"] == 2 * 40 and info["warmup"] == "trained"
    assert (tmp_path / "a" / "work" / "first_order.json").exists()
    again = shedkit.select(data["pool"], out=tmp_path / "b", **kw)
    info2 = read(tmp_path / "b")[1]["method"]
    assert info2["row_gradients_computed"] == 0 and info2["row_gradients_cached"] == 80 and info2["warmup"] == "cached"
    assert again.rows == first.rows
    # cosine: another ranking from the same cache, still nothing computed
    cos = shedkit.select(data["pool"], out=tmp_path / "c", **{**kw, "fo_normalize": "cosine"})
    scores3, m3 = read(tmp_path / "c")
    assert m3["method"]["row_gradients_computed"] == 0
    want = np.array([float(r["first_order_cosine"]) for r in scores])
    assert cos.rows == sorted(np.lexsort((np.arange(40), -want))[:7].tolist())


def test_first_order_guards_and_quotas(tmp_path, data):
    rows = [json.loads(x) for x in open(data["pool"])]
    labels = [json.loads(x) for x in open(data["pool_labels"])]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({**r, "src": "a" if i % 3 else "b"}) + "\n" for i, (r, _) in enumerate(zip(rows, labels))))
    kw = dict(method="first-order", budget=6, target=[data["target_dev"]], cache_dir=tmp_path / "cache",
              easy_quantile=0.25, quota_by="src", quota=["a=0.5", "b=0.5"], **SETTINGS)
    sel = shedkit.select(pool, out=tmp_path / "o", **kw)
    scores, manifest = read(tmp_path / "o")
    assert sum(r["excluded"] == "easy" for r in scores) == 10
    assert not any(scores[i]["excluded"] for i in sel.rows)
    assert sorted(scores[i]["group"] for i in sel.rows) == ["a"] * 3 + ["b"] * 3
    assert "loss_base" in scores[0] and manifest["method"]["selection"]["group_selected"] == {"a": 3, "b": 3}


def test_cli_flags_reach_the_method(tmp_path, data):
    from shedkit.cli.main import main

    code = main(["select", str(data["pool"]), "--method", "first-order", "--model", "tiny-random", "--budget", "5",
                 "--target", str(data["target_dev"]), "--fo-checkpoints", "1", "--fo-warmup", "6",
                 "--fo-normalize", "cosine", "--max-length", "64", "--precision", "fp32", "--lora-r", "4",
                 "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    info = read(tmp_path / "o")[1]["method"]
    assert info["params"]["checkpoints"] == 1 and info["params"]["normalize"] == "cosine"
    assert info["row_gradients_computed"] == 40


def test_first_order_needs_a_loss_target(tmp_path, data):
    from shedkit.errors import ShedkitError

    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"query": "Q?", "choices": ["a", "b"], "gold": 0}) + "\n")
    with pytest.raises(ShedkitError, match="loss target"):
        shedkit.select(data["pool"], method="first-order", budget=3, target=[mc], cache_dir=tmp_path / "c", **SETTINGS)


def test_less_values_per_target_file_end_to_end(tmp_path, data):
    """--fo-normalize less with two target files: one value per file (its dev rows' mean
    cosine), the max of them selects; the mean from the same cache; columns and manifest."""
    dev2 = tmp_path / "more-dev.jsonl"
    dev2.write_text("".join(open(data["target_test"]).readlines()[:5]))
    kw = dict(method="first-order", budget=7, target=[data["target_dev"], dev2], cache_dir=tmp_path / "cache",
              fo_normalize="less", **SETTINGS)
    sel = shedkit.select(data["pool"], out=tmp_path / "a", **kw)
    scores, manifest = read(tmp_path / "a")
    assert {"first_order_less", "first_order_less_target_dev", "first_order_less_more-dev", "first_order_raw",
            "first_order_cosine", "response_tokens"} <= set(scores[0])
    col = lambda name: np.array([float(r[name]) for r in scores])  # noqa: E731
    less, a, b = col("first_order_less"), col("first_order_less_target_dev"), col("first_order_less_more-dev")
    np.testing.assert_array_equal(col("first_order"), less)
    np.testing.assert_allclose(less, np.maximum(a, b), rtol=1e-12)
    assert np.all(np.abs(less) <= 1 + 1e-9) and not np.allclose(a, b)
    assert sel.rows == sorted(np.lexsort((np.arange(40), -less))[:7].tolist())
    info = manifest["method"]
    assert info["params"]["normalize"] == "less" and info["params"]["tasks"] == ["target_dev", "more-dev"]
    assert info["params"]["task_reduce"] == "max" and info["params"]["center"] is True
    assert info["less"]["task_rows"] == [6, 5] and info["less"]["center_rows"] == 40
    assert info["row_gradients_computed"] == 2 * 40 and info["center_gradients_computed"] == 2 * 40
    mean = shedkit.select(data["pool"], out=tmp_path / "b", **{**kw, "fo_task_reduce": "mean"})
    scores_b, m_b = read(tmp_path / "b")
    assert m_b["method"]["row_gradients_computed"] == 0
    np.testing.assert_allclose([float(r["first_order"]) for r in scores_b], (a + b) / 2, rtol=1e-9)
    assert mean.rows == sorted(np.lexsort((np.arange(40), -(a + b) / 2))[:7].tolist())
    # a single target: no per-task columns
    shedkit.select(data["pool"], out=tmp_path / "c", **{**kw, "target": [data["target_dev"]]})
    scores_c, _ = read(tmp_path / "c")
    assert "first_order_less" in scores_c[0] and not any(k.startswith("first_order_less_") for k in scores_c[0])
    # raw (the default) writes no less column
    shedkit.select(data["pool"], out=tmp_path / "d", **{k: v for k, v in kw.items() if k != "fo_normalize"})
    assert "first_order_less" not in read(tmp_path / "d")[0][0]


def test_less_cli_flags_reach_the_method(tmp_path, data):
    from shedkit.cli.main import main

    code = main(["select", str(data["pool"]), "--method", "first-order", "--model", "tiny-random", "--budget", "5",
                 "--target", str(data["target_dev"]), "--target", str(data["target_test"]),
                 "--fo-normalize", "less", "--no-fo-center", "--fo-task-reduce", "mean", "--fo-center-rows", "10",
                 "--fo-checkpoints", "1", "--fo-warmup", "6", "--max-length", "64", "--precision", "fp32",
                 "--lora-r", "4", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    scores, manifest = read(tmp_path / "o")
    params = manifest["method"]["params"]
    assert (params["normalize"], params["center"], params["task_reduce"], params["center_rows"]) == ("less", False, "mean", 10)
    assert manifest["method"]["less"]["center_rows"] == 10
    assert {"first_order_less_target_dev", "first_order_less_target_test"} <= set(scores[0])
