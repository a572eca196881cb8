"""`select --method random`: exact budgets, seeds, outputs, config precedence, Python API."""

import csv
import json

import pytest

import shedkit
from shedkit.cli.main import main
from shedkit.data.synthetic import write_demo_data


@pytest.fixture
def pool_path(tmp_path):
    return write_demo_data(tmp_path / "data", n=200, seed=1)["pool"]


@pytest.mark.parametrize("budget,size", [(0.1, 20), ("0.25", 50), (0.333, 67), ("37", 37), (200, 200), (0.001, 1)])
def test_budget_gives_exact_size(pool_path, budget, size):
    res = shedkit.select(pool_path, method="random", budget=budget, seed=0)
    assert len(res.positions) == size == len(set(res.rows))


def test_same_seed_same_subset_other_seed_differs(pool_path):
    a = shedkit.select(pool_path, budget=0.2, seed=7).rows
    b = shedkit.select(pool_path, budget=0.2, seed=7).rows
    c = shedkit.select(pool_path, budget=0.2, seed=8).rows
    assert a == b and a != c


def test_outputs(tmp_path, pool_path):
    out = tmp_path / "run"
    assert main(["select", str(pool_path), "--budget", "0.1", "--out", str(out), "--seed", "3"]) == 0
    assert {p.name for p in out.iterdir()} >= {"subset.jsonl", "scores.csv", "manifest.json"}
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [int(r["row"]) for r in rows] == list(range(200))
    chosen = [int(r["row"]) for r in rows if r["selected"] == "1"]
    assert len(chosen) == 20
    lines = pool_path.read_text().splitlines(keepends=True)
    assert (out / "subset.jsonl").read_text() == "".join(lines[i] for i in chosen)
    pool = shedkit.load_pool(pool_path)
    assert [r["id"] for r in rows] == [r.id for r in pool.records]
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 3 and m["counts"] == {"pool": 200, "budget": 20, "selected": 20}
    assert m["environment"]["packages"]["shedkit"] == shedkit.__version__
    assert m["shedkit_command"][:2] == ["shedkit", "select"] or m["shedkit_command"]
    assert set(m["timings"]) >= {"load", "select", "write"}


def test_yaml_config_precedence(tmp_path, pool_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("budget: 30\nseed: 5\n")
    main(["select", str(pool_path), "--config", str(cfg), "--out", str(tmp_path / "a")])
    main(["select", str(pool_path), "--config", str(cfg), "--seed", "6", "--out", str(tmp_path / "b")])
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma["counts"]["budget"] == 30 and ma["seed"] == 5  # YAML beats defaults
    assert mb["counts"]["budget"] == 30 and mb["seed"] == 6  # flags beat YAML


def test_yaml_unknown_key_is_a_clear_error(tmp_path, pool_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("budgt: 30\n")
    assert main(["select", str(pool_path), "--config", str(cfg), "--out", str(tmp_path / "a")]) == 2
    assert "did you mean budget" in capsys.readouterr().err


def test_python_api_mirrors_cli(pool_path):
    res = shedkit.select(pool_path, method="random", budget=10, seed=0)
    assert len(res.records) == 10 and all(r.index in res.rows for r in res.records)
    assert res.selected_mask.sum() == 10 and res.out_dir is None


def test_full_method_takes_everything(pool_path):
    assert len(shedkit.select(pool_path, method="full").rows) == 200


def test_help_everywhere(capsys):
    from shedkit.cli.main import SUBCOMMANDS, app

    assert main(["--help"]) == 0
    for name in [c.name for c in app.registered_commands]:
        assert main([name, "--help"]) == 0, name
    assert "select" in capsys.readouterr().out


def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--rows", "80", "--method", "random"]) == 0
    assert (tmp_path / "demo" / "run" / "subset.jsonl").exists()
    assert "corrupted" in capsys.readouterr().out


def test_threads_flag_sets_torch_threads_and_is_not_a_method_option(tmp_path, pool_path):
    """--threads N reaches torch (as bench/finetune/eval's does); random takes no such option,
    so it must not be passed down as one; 0 is refused with a clear error."""
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["select", str(pool_path), "--budget", "5", "--out", str(tmp_path / "a"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["select", str(pool_path), "--budget", "5", "--out", str(tmp_path / "b"), "--threads", "0"]) != 0
    finally:
        torch.set_num_threads(before)
