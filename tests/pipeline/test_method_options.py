"""Typed method options: one dataclass per method gives the flags, the YAML keys and the keyword
arguments; a misspelt option, or one the chosen method does not take, fails naming the right one."""

import dataclasses

import pytest

import shedkit
from shedkit.cli.main import main
from shedkit.errors import ShedkitError
from shedkit.models.config import TrainConfig
from shedkit.pipeline.methods import METHODS, options_class
from shedkit.pipeline.options import TrainOptions, check_options, option_fields, train_config_from

POOL = "".join(f'{{"instruction": "task {i}", "input": "", "output": "answer {i}"}}\n' for i in range(12))


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(POOL)
    return path


def err_of(capsys):
    return " ".join(capsys.readouterr().err.split())


# -- Python keyword arguments --------------------------------------------------------------------

def test_python_typo_names_the_option(pool, tmp_path):
    with pytest.raises(ShedkitError, match="clustrs.*did you mean 'clusters'"):
        shedkit.select(pool, method="random", budget=10, clustrs=5)


def test_python_option_of_another_method_is_an_error(pool, tmp_path):
    with pytest.raises(ShedkitError, match="'bins' is not used by --method random.*dq"):
        shedkit.select(pool, method="random", budget=3, bins=5, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written


def test_python_typo_within_the_method(pool):
    with pytest.raises(ShedkitError, match="did you mean 'bins'"):
        shedkit.select(pool, method="dq", budget=3, binz=5, embedder="hashed-ngrams")


def test_python_valid_options_still_select(pool):
    res = shedkit.select(pool, method="dq", budget=4, embedder="hashed-ngrams", bins=2, progress=False)
    assert len(res.rows) == 4 and res.manifest["config"]["bins"] == 2


# -- YAML keys -----------------------------------------------------------------------------------

def test_yaml_key_the_method_does_not_use(pool, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("clusters: 5\n")
    assert main(["select", str(pool), "--budget", "3", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = err_of(capsys)
    assert f"{cfg}: key 'clusters' is not used by --method random" in err and not (tmp_path / "o").exists()


def test_yaml_typo_of_a_method_option(pool, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("method: dq\nbinz: 5\n")
    assert main(["select", str(pool), "--budget", "3", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "binz (did you mean bins?)" in err_of(capsys)


def test_yaml_method_options_reach_the_method(pool, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("method: dq\nembedder: hashed-ngrams\nbins: 3\nprogress: false\n")
    assert main(["select", str(pool), "--budget", "6", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    import json

    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["config"]["bins"] == 3 and manifest["method"]["bins"] == 3


# -- flags ---------------------------------------------------------------------------------------

def test_flag_the_method_does_not_use(pool, tmp_path, capsys):
    code = main(["select", str(pool), "--budget", "3", "--clusters", "5", "--out", str(tmp_path / "o")])
    assert code == 2 and "--clusters is not used by --method random" in err_of(capsys)
    assert not (tmp_path / "o").exists()


def test_misspelt_flag_is_a_usage_error(pool, tmp_path, capsys):
    code = main(["select", str(pool), "--budget", "3", "--clustrs", "5", "--out", str(tmp_path / "o")])
    assert code == 2 and "--clusters" in err_of(capsys)  # click's own "(Possible options: --clusters)"


def test_select_has_every_fine_tune_flag(capsys):
    assert main(["select", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--template", "--lora-alpha", "--warmup-ratio", "--grad-accum", "--train-method", "--epochs"):
        assert flag in out, flag


# -- the declarations --------------------------------------------------------------------------

def test_every_method_declares_options():
    for name in METHODS:
        cls = options_class(name)
        assert dataclasses.is_dataclass(cls), name
        for f in dataclasses.fields(cls):
            assert f.default is None and f.metadata["help"], (name, f.name)


def test_train_options_mirror_train_config():
    names = set(option_fields(TrainOptions))
    assert names == {("train_method" if f.name == "method" else f.name) for f in dataclasses.fields(TrainConfig)}
    cfg = train_config_from({"train_method": "full", "epochs": 2, "lr": 1e-3, "grad_accum": 2})
    assert cfg == TrainConfig(method="full", epochs=2.0, lr=1e-3, grad_accum=2)
    assert isinstance(cfg.epochs, float) and train_config_from({}) == TrainConfig()


def test_same_option_name_means_the_same_type_in_every_method():
    seen = {}
    for name in METHODS:
        for opt_name, f in option_fields(options_class(name)).items():
            assert seen.setdefault(opt_name, f.type) == f.type, opt_name


def test_check_options_accepts_declared_names():
    check_options("shed-qocs", ["clusters", "target", "lora_alpha", "backend", "values", "progress"])
    check_options("lobass", ["reference", "template", "score_batch_size", "ifd"])
    with pytest.raises(ShedkitError, match="not used by --method lobass"):
        check_options("lobass", ["clusters"])
