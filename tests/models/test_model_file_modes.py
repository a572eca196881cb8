"""Model saves and caches follow the user's umask: safetensors writes its files 0600, and a
rename would publish that private mode to colleagues on a shared machine."""

import copy
import os

import pytest

from helpers import mode_of, umask_setter
from shedkit.models import TrainConfig
from shedkit.models.finetune import finetune, save_finetuned

umask = pytest.fixture(umask_setter)
FAST = TrainConfig(epochs=1, batch_size=4, lr=2e-2, lora_r=4, lora_alpha=8, precision="fp32")


def assert_tree_modes(root, file_mode=0o644, dir_mode=0o755):
    assert mode_of(root) == dir_mode
    seen = []
    for here, dirs, files in os.walk(root):
        for d in dirs:
            assert mode_of(os.path.join(here, d)) == dir_mode, os.path.join(here, d)
        for f in files:
            assert mode_of(os.path.join(here, f)) == file_mode, os.path.join(here, f)
            seen.append(f)
    return seen


def test_saved_finetune_adapter_and_merged_model(umask, tiny, rows, tmp_path):
    umask(0o022)
    res = finetune("tiny-random", None, rows, FAST, seed=3, progress=False)
    assert "adapter_model.safetensors" in assert_tree_modes(save_finetuned(res, tmp_path / "adapter"))
    assert "model.safetensors" in assert_tree_modes(save_finetuned(res, tmp_path / "merged", merged=True))


def test_training_checkpoints(umask, tiny, rows, tmp_path):
    umask(0o022)
    model, tok = tiny

    class Stop(Exception):
        pass

    def stop_at(n):
        if n == 2:
            raise Stop

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Stop):
        finetune(model, tok, rows, FAST, seed=3, progress=False, checkpoint_dir=ckpt, checkpoint_every=1, on_step=stop_at)
    files = assert_tree_modes(ckpt)
    assert {"latest.json", "trainable.safetensors", "state.pt"} <= set(files)


def test_gguf_conversion_cache(umask, tiny, tmp_path, monkeypatch):
    """convert_gguf's writing, with the GGUF reading stood in for by the tiny model."""
    import transformers

    from shedkit.models.loading import CONVERTED_MARKER, convert_gguf

    umask(0o022)
    model, tok = tiny
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: copy.deepcopy(model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    out = convert_gguf(gguf, tmp_path / "cache" / "models" / "m-123")
    files = assert_tree_modes(out)
    assert {"model.safetensors", CONVERTED_MARKER} <= set(files)


def test_first_order_valuation_cache(umask, tiny, rows, tmp_path):
    from shedkit.value.first_order import FirstOrderValuation

    umask(0o022)
    cfg = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=5e-2, batch_size=2, epochs=1)
    FirstOrderValuation(model="tiny-random", train_config=cfg, warmup_rows=4, checkpoints=2, cache_dir=tmp_path / "cache",
                        batch_size=3, progress=False, seed=0, projection_dim=8).fit(rows, rows[:3])
    files = assert_tree_modes(tmp_path / "cache")
    assert "checkpoint-0.safetensors" in files and any(f.endswith(".npz") for f in files)
    assert any(f.startswith("part-") and f.endswith(".jsonl") for f in files)


def test_embedding_and_loss_caches(umask, tmp_path):
    import numpy as np

    from shedkit.embed import EmbeddingCache
    from shedkit.models.losses import LossCache

    umask(0o022)
    EmbeddingCache(tmp_path / "cache", "x").add(["a", "b"], np.eye(2, dtype=np.float32))
    LossCache(tmp_path / "cache", "k", {"m": 1}).add([{"id": "a", "loss": 1.0}])
    files = assert_tree_modes(tmp_path / "cache")
    assert any(f.endswith(".npy") for f in files) and any(f.endswith(".jsonl") for f in files)
