"""`shedkit finetune` on tiny-random: it trains (parameters change, training loss drops), saves
safetensors + train_stats.json, and the saved directory evaluates like the in-memory model."""

import json

import pytest
import torch

from shedkit.cli.main import main
from shedkit.data.pool import load_pool
from shedkit.errors import ShedkitError
from shedkit.evaluate import evaluate_model, finetune_subset, load_task
from shedkit.models import ScoreConfig, TrainConfig, load_model
from shedkit.models.finetune import finetune  # not via shedkit.models: the submodule shadows the function once imported
from shedkit.models.objectives import dev_loss

FP32 = ScoreConfig(precision="fp32")
RECIPE = TrainConfig(epochs=3, lr=5e-3, batch_size=8, max_length=128, precision="fp32")


@pytest.fixture
def files(tmp_path, write_jsonl, alpaca_rows):
    train = write_jsonl(tmp_path / "subset.jsonl", alpaca_rows[:16])
    dev = write_jsonl(tmp_path / "dev.jsonl", alpaca_rows[16:])
    return train, dev


def _differs(a, b) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def test_cli_finetune_trains_and_saves_adapter(tmp_path, files):
    train, _ = files
    out = tmp_path / "ft"
    code = main(["finetune", str(train), "--model", "tiny-random", "--out", str(out), "--epochs", "3", "--lr", "5e-3",
                 "--max-length", "128", "--precision", "fp32", "--no-progress"])
    assert code == 0
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["kind"] == "lora-adapter" and stats["base_model"] == "tiny-random" and stats["rows"] == 16
    assert stats["steps"] == 6 == len(stats["step_losses"])  # 16 rows / batch 8 x 3 epochs
    assert stats["rows_trained"] == 48
    assert stats["train_seconds"] > 0 and stats["wall_seconds"] >= stats["train_seconds"]
    assert stats["train_config"]["lr"] == 5e-3 and stats["subset"]["records"] == 16
    meta = json.loads((out / "shedkit_train.json").read_text())
    assert meta["base_model"] == "tiny-random"

    base, tok = load_model("tiny-random")
    tuned, _ = load_model(str(out))  # adapter applied to its base and merged
    assert _differs(base, tuned), "fine-tuning left every parameter unchanged"
    records = load_pool(train).records
    before = dev_loss(base, tok, records, FP32)["loss"]
    after = dev_loss(tuned, tok, records, FP32)["loss"]
    assert after < before - 0.05, (before, after)
    assert stats["step_losses"][-1] < stats["step_losses"][0]
    assert main(["finetune", str(train), "--model", "tiny-random", "--out", str(out), "--no-progress"]) == 2  # exists


@pytest.mark.parametrize("merged", [False, True])
def test_saved_dir_evaluates_like_the_in_memory_model(tmp_path, files, merged):
    train, dev = files
    out = tmp_path / "ft"
    finetune_subset(train, "tiny-random", out, RECIPE, seed=1, merged=merged, progress=False)
    assert (out / "adapter_config.json").exists() != merged
    base, tok = load_model("tiny-random")
    in_memory = finetune(base, tok, load_pool(train).records, RECIPE, seed=1, progress=False).model
    expected = dev_loss(in_memory, tok, load_pool(dev).records, FP32)["loss"]
    doc = evaluate_model(out, [load_task(dev)], tmp_path / "ev", score_config=FP32, progress=False)
    assert doc["tasks"]["dev"]["loss"] == pytest.approx(expected, rel=1e-5)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["tasks"]["dev"]["loss"] == doc["tasks"]["dev"]["loss"]
    base_loss = dev_loss(base, tok, load_pool(dev).records, FP32)["loss"]
    assert doc["tasks"]["dev"]["loss"] != pytest.approx(base_loss, rel=1e-6)


def test_full_fine_tuning_changes_every_weight_matrix(tmp_path, files):
    train, _ = files
    out = tmp_path / "full"
    stats = finetune_subset(train, "tiny-random", out, TrainConfig(method="full", epochs=2, lr=1e-3, max_length=128,
                                                                   precision="fp32"), progress=False)
    assert stats["kind"] == "full" and (out / "model.safetensors").exists()
    base, tok = load_model("tiny-random")
    tuned, _ = load_model(str(out))
    changed = _differs(base, tuned)
    assert all(k in changed for k in base.state_dict() if k.endswith("proj.weight"))
    records = load_pool(train).records
    assert dev_loss(tuned, tok, records, FP32)["loss"] < dev_loss(base, tok, records, FP32)["loss"]
    with pytest.raises(ShedkitError, match="already exists"):
        finetune_subset(train, "tiny-random", out, progress=False)
